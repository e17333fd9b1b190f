"""k8s-free-bootstrap/: the systemd units pass `systemd-analyze verify`, bootstrap.sh lays out a
control-plane or worker host in a temporary root (files, modes, unit contents, env file), and the
command line a kyb@ unit runs starts a service that answers on a real nats-server."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kyb.serve import available_services

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / "k8s-free-bootstrap" / "bootstrap.sh"
UNITS = ("kyb-nats.service", "kyb@.service", "kyb-kubelet.service")
VENV = Path(sys.prefix)  # the virtualenv running the tests holds kyb and nats-server


def bootstrap(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(BOOTSTRAP), "--root", str(root), "--no-install", "--venv", str(VENV), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key`` -> its values, in order (systemd units repeat keys such as EnvironmentFile)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


@pytest.fixture
def control_plane(tmp_path) -> Path:
    creds = tmp_path / "issued"
    creds.mkdir()
    (creds / "api.creds").write_text("KYB_NATS_USER=api\nKYB_NATS_PASSWORD=s3cret\n")
    (creds / "kubelet.creds").write_text("KYB_NATS_USER=kubelet-n1\nKYB_NATS_PASSWORD=other\n")
    (creds / "nats-auth.conf").write_text('authorization { users = [] }\n')
    root = tmp_path / "root"
    root.mkdir()
    done = bootstrap(root, "--role", "control-plane", "--node-name", "n1", "--runtime", "process",
                     "--creds-dir", str(creds))
    assert done.returncode == 0, done.stderr
    assert "systemctl daemon-reload && systemctl enable --now" in done.stdout  # printed, not run
    return root


def test_control_plane_layout(control_plane):
    etc = control_plane / "etc" / "kybernetes"
    env = read_env(etc / "kyb.env")
    assert env["KYB_ROLE"] == "control-plane"
    assert env["KYB_NATS_URL"] == "nats://127.0.0.1:4222"
    assert env["KYB_NODE_NAME"] == "n1"
    assert env["KYB_RUNTIME"] == "process"
    assert stat.S_IMODE((etc / "kyb.env").stat().st_mode) == 0o644

    conf = (etc / "nats.conf").read_text()
    assert 'listen: "0.0.0.0:4222"' in conf
    assert 'store_dir: "/var/lib/kybernetes/nats"' in conf
    assert 'include "nats-auth.conf"' in conf
    assert stat.S_IMODE((etc / "nats-auth.conf").stat().st_mode) == 0o600

    assert stat.S_IMODE((etc / "creds").stat().st_mode) == 0o700
    for name in ("api.creds", "kubelet.creds"):
        assert stat.S_IMODE((etc / "creds" / name).stat().st_mode) == 0o600
    assert "s3cret" in (etc / "creds" / "api.creds").read_text()

    enabled = (etc / "units").read_text().split()
    expected = ["kyb-nats.service"] + [f"kyb@{s}.service" for s in available_services() if s != "kubelet"]
    assert enabled == expected + ["kyb-kubelet.service"]
    for unit in UNITS:
        path = control_plane / "etc" / "systemd" / "system" / unit
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert "/opt/kybernetes/venv" not in path.read_text(), "units point at the chosen virtualenv"
        assert unit_settings(path)["ExecStart"][0].startswith(str(VENV / "bin") + "/")


def test_worker_joins_a_control_plane(tmp_path):
    refused = bootstrap(tmp_path, "--role", "worker", "--node-name", "w1")
    assert refused.returncode != 0
    assert "--nats-url" in refused.stderr

    done = bootstrap(tmp_path, "--role", "worker", "--node-name", "w1", "--runtime", "docker",
                     "--nats-url", "nats://10.0.0.1:4222")
    assert done.returncode == 0, done.stderr
    etc = tmp_path / "etc" / "kybernetes"
    assert (etc / "units").read_text().split() == ["kyb@proxy.service", "kyb-kubelet.service"]
    assert read_env(etc / "kyb.env")["KYB_NATS_URL"] == "nats://10.0.0.1:4222"
    assert not (etc / "nats.conf").exists(), "a worker runs no NATS server"


@pytest.mark.parametrize("args, message", [
    pytest.param(["--role", "master"], "unknown role", id="bad-role"),
    pytest.param([], "--role", id="no-role"),
    pytest.param(["--role", "control-plane", "--node-name", "Bad_Name"], "DNS name", id="bad-node-name"),
    pytest.param(["--role", "control-plane", "--runtime", "rkt"], "unknown runtime", id="bad-runtime"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, args, message):
    done = bootstrap(tmp_path, *args)
    assert done.returncode != 0
    assert message in done.stderr
    assert not (tmp_path / "etc").exists()


def test_unit_restart_policies_and_hardening():
    units = {u: unit_settings(ROOT / "k8s-free-bootstrap" / "systemd" / u) for u in UNITS}
    for name, s in units.items():
        assert s["Restart"] == ["always"], name
        assert float(s["RestartSec"][0]) > 0, name
        assert s["ProtectSystem"] == ["strict"], name
        assert s["NoNewPrivileges"] == ["yes"], name
        assert s["PrivateTmp"] == ["yes"], name
        assert s["WantedBy"] == ["multi-user.target"], name
    assert units["kyb-nats.service"]["DynamicUser"] == ["yes"]
    assert units["kyb@.service"]["DynamicUser"] == ["yes"]
    assert "DynamicUser" not in units["kyb-kubelet.service"], "the kubelet needs the Docker socket"
    assert units["kyb-kubelet.service"]["ReadWritePaths"] == ["/var/lib/kybernetes"]
    assert "-/etc/kybernetes/creds/%i.creds" in units["kyb@.service"]["EnvironmentFile"]
    assert units["kyb@.service"]["ExecStart"][0].split()[1:3] == ["serve", "%i"]


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    probe = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"systemd-analyze does not run here: {probe.stderr.strip()}")
    return exe


@pytest.mark.parametrize("unit", ["kyb-nats.service", "kyb@api.service", "kyb@volumebinder.service",
                                  "kyb-kubelet.service"])
def test_systemd_analyze_verify(control_plane, unit):
    exe = _systemd_analyze()
    units = control_plane / "etc" / "systemd" / "system"
    if "@" in unit:
        (units / unit).symlink_to("kyb@.service")
    done = subprocess.run([exe, "verify", str(units / unit)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=units)
    # verify exits 0 on settings it ignores, but says so: any line naming our unit is a problem.
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "kyb" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    """The verify test above can fail: a misspelt setting is reported."""
    exe = _systemd_analyze()
    unit = tmp_path / "kyb-broken.service"
    unit.write_text((ROOT / "k8s-free-bootstrap" / "systemd" / "kyb-nats.service").read_text()
                    .replace("/opt/kybernetes/venv", str(VENV)).replace("Restart=always", "Restart=sometimes"))
    done = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert "sometimes" in done.stdout + done.stderr


def exec_start(unit: Path, instance: str, env: dict[str, str]) -> list[str]:
    """ExecStart as systemd runs it: %i, ${VAR} (one word) and $VAR (split into words)."""
    line = unit_settings(unit)["ExecStart"][0].replace("%i", instance)
    words: list[str] = []
    for word in shlex.split(line):
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
            words += env.get(word[1:], "").split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return words


def test_kyb_unit_command_line_serves_the_api(tmp_path, nats_url):
    """What kyb@api.service starts (with the env file bootstrap wrote) answers `kyb version`."""
    done = bootstrap(tmp_path, "--role", "control-plane", "--node-name", "n1", "--runtime", "process",
                     "--nats-url", nats_url)
    assert done.returncode == 0, done.stderr
    env = read_env(tmp_path / "etc" / "kybernetes" / "kyb.env")
    argv = exec_start(tmp_path / "etc" / "systemd" / "system" / "kyb@.service", "api", env)
    assert argv[:4] == [str(VENV / "bin" / "kyb"), "serve", "api", "--nats"]
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        answer = ""
        while time.monotonic() < deadline and "api service answering" not in answer:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            answer = subprocess.run([str(VENV / "bin" / "kyb"), "--nats", nats_url, "version"],
                                    capture_output=True, text=True, timeout=30, check=False).stdout
        assert "api service answering" in answer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
