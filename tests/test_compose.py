"""compose/: the compose file runs every service, the image installs what the code imports, and
`docker compose up` on this host's engine gives a cluster that runs a pod applied with `kyb`.

The end-to-end test builds everything locally (compose/offline_images.py), since no image
registry is reachable on test machines, and talks only to 127.0.0.1 (every container uses the
host network)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kyb.natsd import free_port
from kyb.serve import available_services
from tests.cluster import wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
KYB_IMAGE = "kybernetes/kyb:compose-test"


def _offline_images():
    spec = importlib.util.spec_from_file_location("offline_images", ROOT / "compose" / "offline_images.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compose_file() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_file_runs_every_service_with_kyb_serve():
    doc = _compose_file()
    assert doc["version"] == "3.8"
    services = doc["services"]
    assert set(services) == {"nats", *available_services()}, "one container per installed service"
    for name, svc in services.items():
        if name == "nats":
            continue
        assert svc["command"][:3] == ["serve", name, "--nats"], name
        assert svc["command"][3].startswith("nats://nats:"), name
        assert svc["network_mode"] == "host", name
        assert svc["depends_on"]["nats"]["condition"] == "service_healthy", name
        assert svc["healthcheck"]["test"][0] == "CMD", name
    kubelet = services["kubelet"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in kubelet["volumes"]
    assert kubelet["command"][kubelet["command"].index("--runtime") + 1] == "docker"
    assert "--jetstream" in services["nats"]["command"]
    assert "/healthz" in " ".join(services["nats"]["healthcheck"]["test"])


def test_every_third_party_import_is_a_declared_dependency():
    """The image installs pyproject's dependencies: anything else the code imports would be
    missing in `docker compose up` (and in any plain `pip install`)."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    tools = _offline_images()
    declared = {canonicalize_name(d.metadata["Name"])
                for d in tools.requirement_closure(tools.project_requirements(ROOT / "pyproject.toml"))}
    providers = metadata.packages_distributions()
    used = tools.imported_modules([ROOT / d for d in ("kyb", "schemas", "services")])
    missing = {
        f"{module} ({', '.join(providers.get(module, ['not installed']))})":
            sorted(str(Path(p).relative_to(ROOT)) for p in files)
        for module, files in used.items()
        if not any(canonicalize_name(d) in declared for d in providers.get(module, []))
    }
    assert not missing, f"imported but not in pyproject's dependencies: {missing}"


# -- end to end ------------------------------------------------------------------------------

def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (1.29), whichever this host has."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _ci_installs_compose() -> bool:
    ci = ROOT / ".ci" / "run"
    return ci.exists() and "docker-compose" in ci.read_text()


@pytest.fixture
def compose(docker_engine):
    cmd = compose_command()
    if cmd is None:
        why = "neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)"
        if os.environ.get("KYB_REQUIRE_DOCKER") == "1" and _ci_installs_compose():
            pytest.fail(why)
        pytest.skip(why)
    return cmd


def _export_source(dest: Path) -> Path:
    """The build context: the project without its virtualenv, caches and git history."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("kyb", "schemas", "services", "compose"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


def _kyb(url: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    kyb = Path(sys.executable).with_name("kyb")
    return subprocess.run([str(kyb), "--nats", url, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _poll(what: str, fn, deadline: float):
    """tests.cluster.wait_until against one deadline shared by the steps of a test."""
    return wait_until(fn, timeout=max(0.0, deadline - time.monotonic()), what=what, interval=0.5)


@pytest.mark.docker
@pytest.mark.timeout(360)
def test_compose_up_runs_a_pod_applied_from_the_host(compose, docker_engine, tmp_path):
    from tests.images import build_busybox_image

    tools = _offline_images()
    base_image, nats_image = tools.ensure_images(docker_engine)
    busybox = build_busybox_image(docker_engine)
    source = tmp_path / "src"
    source.mkdir()
    _export_source(source)
    state = tmp_path / "state"
    state.mkdir()
    node = f"compose-{os.getpid()}"
    nats_port = free_port()
    env = dict(
        os.environ,
        KYB_SOURCE=str(source),
        KYB_IMAGE=KYB_IMAGE,
        KYB_BASE_IMAGE=base_image,
        KYB_PIP_OPTIONS="--no-deps --no-index --no-build-isolation",
        KYB_NATS_IMAGE=nats_image,
        KYB_NATS_PORT=str(nats_port),
        KYB_NATS_MONITOR_PORT=str(free_port()),
        KYB_DNS_PORT=str(free_port()),
        KYB_INGRESS_HTTP_PORT=str(free_port()),
        KYB_INGRESS_HTTPS_PORT=str(free_port()),
        KYB_STATE_DIR=str(state),
        KYB_NODE_NAME=node,
        KYB_NATS_HEALTHCHECK_INTERVAL="1s",  # the services start once NATS is healthy: sooner
    )
    project = ["-p", f"kybtest{os.getpid()}", "-f", str(source / "compose" / "docker-compose.yml")]

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*compose, *project, *args], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    url = f"nats://127.0.0.1:{nats_port}"
    try:
        built = run("build", "api")  # one image serves every container
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        up = run("up", "-d")
        assert up.returncode == 0, up.stderr[-3000:]
        deadline = time.monotonic() + 200  # 22 service containers start on 2 cores

        manifest = tmp_path / "pod.yaml"
        manifest.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello"},
            "spec": {"containers": [{
                "name": "main", "image": busybox, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo hello from compose; sleep 3600"]}]},
        }))
        applied = _poll("kyb apply through the api container",
                        lambda: (r := _kyb(url, "apply", "-f", str(manifest))).returncode == 0 and r, deadline)
        assert "pod/hello created" in applied.stdout

        def running() -> dict | None:
            got = _kyb(url, "get", "pod", "hello", "-o", "json")
            pod = json.loads(got.stdout) if got.returncode == 0 else {}
            return pod if pod.get("status", {}).get("phase") == "Running" else None

        pod = _poll("pod hello Running", running, deadline)
        assert pod["spec"]["nodeName"] == node
        assert pod["status"]["podIP"].startswith("127.")
        logs = _poll("the pod's log", lambda: "hello from compose" in _kyb(url, "logs", "hello").stdout, deadline)
        assert logs

        unhealthy: list[str] = []

        def all_healthy() -> bool:
            ids = run("ps", "-q").stdout.split()
            info = [docker_engine.api.inspect_container(i) for i in ids]
            unhealthy[:] = [f'{i["Name"]}: {i["State"].get("Status")}/{i["State"].get("Health", {}).get("Status")}'
                            for i in info if i["State"].get("Health", {}).get("Status") != "healthy"]
            return len(ids) == len(_compose_file()["services"]) and not unhealthy

        try:
            _poll("every container healthy", all_healthy, deadline)
        except AssertionError as e:
            raise AssertionError(f"{e}; not healthy: {unhealthy or 'a container is missing'}") from None
    finally:
        down = run("down", "-v", "--remove-orphans", timeout=120)
        for c in docker_engine.containers.list(all=True, filters={"label": f"io.kybernetes.node={node}"}):
            c.remove(force=True)
    assert down.returncode == 0, down.stderr[-2000:]
    assert run("ps", "-q").stdout.split() == []

