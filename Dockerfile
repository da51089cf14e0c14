# syntax=docker/dockerfile:1
#
# whisper-mcp as a container: the service on port 8765 (MCP at /mcp, REST beside
# it), jobs and transcripts in the /service-storage volume, the offline tiny.en
# model converted at build time and baked into the image.
#
#   docker build -t whisper-mcp .
#   docker run -d --name whisper-mcp --restart unless-stopped -p 8765:8765 \
#       -v whisper-mcp-storage:/service-storage -e WHISPER_MCP_TOKEN whisper-mcp
#   (or scripts/start_transcription_service.sh, which runs exactly that)
#
# CPU by default. CUDA alternative: the same file with a CUDA build of torch from
# the PyTorch index, run with the NVIDIA container toolkit; the CUDA runtime comes
# inside torch's wheels, so python:3.11-slim stays the base and only the host
# needs an NVIDIA driver:
#
#   docker build --build-arg TORCH_VARIANT=cu128 -t whisper-mcp:cuda .
#   docker run -d --gpus all ... whisper-mcp:cuda      # --device auto picks CUDA with fp16
#
# TORCH_VARIANT is the folder name on the PyTorch index (cpu, cu126, cu128, ...;
# pick one listed for the torch version pinned in requirements.lock). The
# torch version always comes from requirements.lock.
#
# Build arguments:
#   TORCH_VARIANT  cpu (default) or a CUDA variant as above
#   TORCH_INDEX    the index torch comes from (default: the PyTorch index for TORCH_VARIANT)
#   MODELS         models converted into the image at build time, space-separated
#                  (default tiny.en; "tiny.en base" bakes the multilingual base too)

ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG MODELS="tiny.en"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    WHISPER_MCP_MODEL_CACHE=/opt/whisper-mcp/models

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, in their own layers, so that editing the code does not
# reinstall torch. torch comes from the PyTorch index (its own variant, never
# PyPI's multi-GB CUDA default), at the version requirements.lock pins.
COPY requirements.lock pyproject.toml README.md ./
RUN torch_version="$(sed -n 's/^torch==//p' requirements.lock)" \
    && test -n "$torch_version" \
    && pip install --index-url "${TORCH_INDEX}" "torch==${torch_version}+${TORCH_VARIANT}"
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/dependencies.txt \
    && pip install -c requirements.lock -r /tmp/dependencies.txt \
    && rm /tmp/dependencies.txt

# The project itself.
COPY whisper_mcp ./whisper_mcp
RUN pip install -c requirements.lock . \
    && rm -rf /src/build /src/*.egg-info

# A non-root user owns the storage and the model cache (other packaged models,
# e.g. base, are converted into it on first use).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/whisper whisper \
    && mkdir -p /service-storage "${WHISPER_MCP_MODEL_CACHE}" \
    && chown whisper:whisper /service-storage "${WHISPER_MCP_MODEL_CACHE}"

USER 10001:10001
WORKDIR /home/whisper

# Convert the offline model(s) now, so a container serves at once and offline.
RUN for model in ${MODELS}; do whisper-mcp prepare-model --model "${model}"; done

ENV WHISPER_MCP_HOST=0.0.0.0 \
    WHISPER_MCP_PORT=8765 \
    WHISPER_MCP_STORAGE=/service-storage

EXPOSE 8765
VOLUME /service-storage

# Healthy once /health answers "ok" with the model loaded. There is no curl in
# the slim image: python asks, with the container's token when one is set.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import json, os, sys, urllib.request as r; \
f = os.environ.get('WHISPER_MCP_TOKEN_FILE'); \
t = os.environ.get('WHISPER_MCP_TOKEN') or (open(f).readline().strip() if f else ''); \
q = r.Request('http://127.0.0.1:%s/health' % os.environ.get('WHISPER_MCP_PORT', '8765'), headers={'Authorization': 'Bearer ' + t} if t else {}); \
h = json.load(r.urlopen(q, timeout=8)); \
sys.exit(0 if h.get('status') == 'ok' and h.get('model_loaded') else 1)"]

CMD ["whisper-mcp", "serve"]
