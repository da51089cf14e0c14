#!/usr/bin/env bash
# Start whisper-mcp as a persistent container (built from the Dockerfile at the
# repository root: docker build -t whisper-mcp .).
#
#   scripts/start_transcription_service.sh [--name NAME] [--port PORT] [--volume VOLUME]
#       [--token TOKEN] [--image IMAGE] [--model MODEL] [--bind ADDRESS] [--gpu]
#       [--replace] [--dry-run]
#
# Runs:
#   docker run -d --name NAME --restart unless-stopped -p PORT:8765
#       -v VOLUME:/service-storage [-e WHISPER_MCP_TOKEN] [-e WHISPER_MCP_MODEL=MODEL]
#       [-e WHISPER_MCP_ALLOWED_HOSTS] IMAGE
#
# The token is handed to docker through the environment (-e WHISPER_MCP_TOKEN
# without a value), so it never appears on a command line, in `ps` or in the
# --dry-run output. Default: $WHISPER_MCP_TOKEN, if set.
#
# Exit codes: 0 started (or already running), 1 docker failed, 2 usage error.

set -euo pipefail

prog=start_transcription_service
name=whisper-mcp
port=8765
volume=whisper-mcp-storage
token=${WHISPER_MCP_TOKEN:-}
image=whisper-mcp:latest
model=
bind=
gpu=0
replace=0
dry_run=0

usage() {
    cat <<EOF
usage: $0 [options]

Start the whisper-mcp transcription service container.

  --name NAME        container name (default: $name)
  --port PORT        host port published to the container's 8765 (default: $port)
  --volume VOLUME    named volume or host folder for jobs and transcripts (default: $volume)
  --token TOKEN      bearer token clients must send (default: \$WHISPER_MCP_TOKEN)
  --image IMAGE      image to run (default: $image)
  --model MODEL      start-up model, e.g. tiny.en or base (default: the image's, tiny.en)
  --bind ADDRESS     publish on this host address only, e.g. 127.0.0.1 (default: all)
  --gpu              pass all GPUs to the container (CUDA image, NVIDIA container toolkit)
  --replace          remove an existing container of the same name first
  --dry-run          print the docker command instead of running it
  -h, --help         this help

Then: scripts/wait_for_service --url http://127.0.0.1:PORT
EOF
}

die() {
    echo "$prog: error: $*" >&2
    exit 2
}

# Option values: "--opt value" and "--opt=value".
value() {
    if [[ $# -lt 2 || -z $2 || $2 == --* ]]; then
        die "$1 needs a value (see --help)"
    fi
    printf '%s' "$2"
}

while [[ $# -gt 0 ]]; do
    arg=$1
    case $arg in
        --*=*)
            set -- "${arg%%=*}" "${arg#*=}" "${@:2}"
            continue
            ;;
    esac
    case $arg in
        --name) name=$(value "$@"); shift 2 ;;
        --port) port=$(value "$@"); shift 2 ;;
        --volume) volume=$(value "$@"); shift 2 ;;
        --token) token=$(value "$@"); shift 2 ;;
        --image) image=$(value "$@"); shift 2 ;;
        --model) model=$(value "$@"); shift 2 ;;
        --bind) bind=$(value "$@"); shift 2 ;;
        --gpu) gpu=1; shift ;;
        --replace) replace=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$arg' (see --help)" ;;
    esac
done

[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "--name '$name' is not a valid container name"
if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    die "--port must be a number from 1 to 65535, got '$port'"
fi

# A host folder (a path) rather than a named volume: docker needs it absolute.
if [[ $volume == */* || $volume == .* || $volume == "~"* ]]; then
    case $volume in
        "~"/*) volume=$HOME/${volume#"~/"} ;;
    esac
    if [[ $volume != /* ]]; then
        volume=$(pwd)/${volume#./}
    fi
    if [[ $dry_run == 0 ]]; then
        mkdir -p "$volume"
        echo "$prog: note: the container runs as uid 10001; it must be able to write $volume" \
            "(e.g. sudo chown 10001:10001 '$volume')." >&2
    fi
fi

publish=$port:8765
if [[ -n $bind ]]; then
    publish=$bind:$publish
fi

cmd=(docker run -d --name "$name" --restart unless-stopped -p "$publish" -v "$volume:/service-storage")
if [[ -n $token ]]; then
    export WHISPER_MCP_TOKEN=$token
    cmd+=(-e WHISPER_MCP_TOKEN)
fi
if [[ -n $model ]]; then
    cmd+=(-e "WHISPER_MCP_MODEL=$model")
fi
if [[ -n ${WHISPER_MCP_ALLOWED_HOSTS:-} ]]; then
    cmd+=(-e WHISPER_MCP_ALLOWED_HOSTS)  # names clients reach it by, beyond localhost
fi
if [[ $gpu == 1 ]]; then
    cmd+=(--gpus all)
fi
cmd+=("$image")

if [[ $dry_run == 1 ]]; then
    printf '%q ' "${cmd[@]}" | sed 's/ $//'
    echo
    if [[ -n $token ]]; then
        echo "$prog: note: the command reads the token from WHISPER_MCP_TOKEN in its environment." >&2
    fi
    exit 0
fi

if [[ -z $token && $bind != 127.0.0.1 && $bind != localhost ]]; then
    echo "$prog: warning: no token (--token or WHISPER_MCP_TOKEN): anyone who can reach port $port" \
        "can use the service." >&2
fi

command -v docker >/dev/null 2>&1 || {
    echo "$prog: error: docker is not installed or not on PATH" >&2
    exit 1
}

if docker container inspect "$name" >/dev/null 2>&1; then
    if [[ $replace == 1 ]]; then
        docker rm -f "$name" >/dev/null
    elif [[ $(docker container inspect -f '{{.State.Running}}' "$name") == true ]]; then
        echo "$prog: container '$name' is already running (--replace to recreate it)." >&2
        exit 0
    else
        echo "$prog: starting the existing container '$name' (--replace to recreate it with new options)." >&2
        docker start "$name" >/dev/null || exit 1
        exit 0
    fi
fi

"${cmd[@]}" || {
    echo "$prog: error: docker run failed" >&2
    exit 1
}
host=${bind:-127.0.0.1}
echo "$prog: started '$name' on port $port; wait for it with: scripts/wait_for_service --url http://$host:$port" >&2
