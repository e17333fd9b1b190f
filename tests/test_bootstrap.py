"""k8s-free-bootstrap/: the systemd units pass `systemd-analyze verify`, bootstrap.sh lays out a
control-plane or worker host in a temporary root (files, modes, unit contents, env file; the pod
network's packages, CNI directory, kernel settings and node agents), and the command lines the
units run start services that work: the api on a real nats-server, with ClusterIPs from the
service CIDR, and the netagent programming a network namespace the test made."""

from __future__ import annotations

import ipaddress
import json
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

from kyb.cli.cluster import extra_options
from kyb.serve import available_services
from services.netagent.plan import ROUTE_PROTO
from tests.cluster import wait_until
from tests.netns import Namespaces, netns  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / "k8s-free-bootstrap" / "bootstrap.sh"
UNITS = ("kyb-nats.service", "kyb@.service", "kyb-node@.service", "kyb-kubelet.service")
VENV = Path(sys.prefix)  # the virtualenv running the tests holds kyb and nats-server
NODE_AGENTS = ("netagent", "netpol", "proxy", "dns")  # kyb-node@ units of every host (network cni)
NODE_IP = "192.0.2.11"


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
                     "--creds-dir", str(creds), "--node-ip", NODE_IP)
    assert done.returncode == 0, done.stderr
    assert "systemctl daemon-reload && systemctl enable --now" in done.stdout  # printed, not run
    # the temporary root has no CNI plugins, nft or conntrack: the install is printed, not run
    assert ("on the target run: apt-get install -y --no-install-recommends "
            "containernetworking-plugins nftables conntrack") in done.stdout
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
    services = [s for s in available_services() if s != "kubelet"]
    assert "nodeipam" in services
    expected = (["kyb-nats.service"] + [f"kyb@{s}.service" for s in services if s not in NODE_AGENTS]
                + [f"kyb-node@{s}.service" for s in NODE_AGENTS])
    assert enabled == expected + ["kyb-kubelet.service"]

    # the pod network (cni, the default): the kubelet's CNI directory, host-local's store, and the
    # kernel settings of every boot
    assert env["KYB_NETWORK"] == "cni" and env["KYB_NODE_IP"] == NODE_IP
    assert env["KYB_NET_ARGS"] == "--network cni --cluster-cidr 10.244.0.0/16 --service-cidr 10.96.0.0/12 --backend host-gw"
    for d in ("etc/cni/net.d", "var/lib/cni"):
        assert (control_plane / d).is_dir() and not list((control_plane / d).iterdir()), d
    assert "br_netfilter" in (control_plane / "etc/modules-load.d/kybernetes.conf").read_text().split()
    sysctl = read_env(control_plane / "etc/sysctl.d/90-kybernetes.conf")
    assert {k.strip(): v.strip() for k, v in sysctl.items()} == {
        "net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1", "net.bridge.bridge-nf-call-ip6tables": "1"}
    for unit in UNITS:
        path = control_plane / "etc" / "systemd" / "system" / unit
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert "/opt/kybernetes/venv" not in path.read_text(), "units point at the chosen virtualenv"
        assert unit_settings(path)["ExecStart"][0].startswith(str(VENV / "bin") + "/")


def test_worker_joins_a_control_plane(tmp_path):
    refused = bootstrap(tmp_path, "--role", "worker", "--node-name", "w1")
    assert refused.returncode != 0
    assert "--nats-url" in refused.stderr

    # the pod network's packages already there (as after apt-get install): nothing to install
    for tool in ("usr/lib/cni/bridge", "usr/lib/cni/host-local", "usr/lib/cni/portmap", "usr/lib/cni/firewall",
                 "opt/cni/bin/loopback", "usr/sbin/nft", "usr/sbin/conntrack"):
        (tmp_path / tool).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    done = bootstrap(tmp_path, "--role", "worker", "--node-name", "w1", "--runtime", "docker",
                     "--nats-url", "nats://10.0.0.1:4222", "--node-ip", "10.0.0.2", "--backend", "vxlan")
    assert done.returncode == 0, done.stderr
    assert "apt-get install" not in done.stdout
    etc = tmp_path / "etc" / "kybernetes"
    assert (etc / "units").read_text().split() == [f"kyb-node@{s}.service" for s in NODE_AGENTS] + ["kyb-kubelet.service"]
    env = read_env(etc / "kyb.env")
    assert env["KYB_NATS_URL"] == "nats://10.0.0.1:4222"
    assert env["KYB_NODE_IP"] == "10.0.0.2" and env["KYB_NET_ARGS"].endswith("--backend vxlan")
    assert not (etc / "nats.conf").exists(), "a worker runs no NATS server"


def test_a_loopback_worker_runs_the_userspace_proxy(tmp_path):
    done = bootstrap(tmp_path, "--role", "worker", "--node-name", "w1", "--network", "loopback",
                     "--nats-url", "nats://10.0.0.1:4222")
    assert done.returncode == 0, done.stderr
    etc = tmp_path / "etc" / "kybernetes"
    assert (etc / "units").read_text().split() == ["kyb@proxy.service", "kyb-kubelet.service"]
    assert read_env(etc / "kyb.env")["KYB_NET_ARGS"] == "--network loopback"
    assert "apt-get" not in done.stdout
    assert not (tmp_path / "etc" / "cni").exists() and not (tmp_path / "etc" / "sysctl.d").exists()


@pytest.mark.parametrize("args, message", [
    pytest.param(["--role", "master"], "unknown role", id="bad-role"),
    pytest.param([], "--role", id="no-role"),
    pytest.param(["--role", "control-plane", "--node-name", "Bad_Name"], "DNS name", id="bad-node-name"),
    pytest.param(["--role", "control-plane", "--runtime", "rkt"], "unknown runtime", id="bad-runtime"),
    pytest.param(["--role", "control-plane", "--network", "flannel"], "unknown network", id="bad-network"),
    pytest.param(["--role", "control-plane", "--backend", "ipip", "--node-ip", NODE_IP], "unknown backend",
                 id="bad-backend"),
    pytest.param(["--role", "control-plane", "--node-ip", "192.0.2"], "not an IPv4 address", id="bad-node-ip"),
    pytest.param(["--role", "control-plane"], "--node-ip is required with --root", id="cni-without-node-ip"),
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
    assert units["kyb-kubelet.service"]["ReadWritePaths"] == [
        "/var/lib/kybernetes /run -/etc/cni/net.d -/var/lib/cni -/etc/netns"]
    assert "-/etc/kybernetes/creds/%i.creds" in units["kyb@.service"]["EnvironmentFile"]
    assert units["kyb@.service"]["ExecStart"][0].split()[1:3] == ["serve", "%i"]
    # the node agents program the host's namespace as root, with the network's capabilities only
    node = units["kyb-node@.service"]
    assert "DynamicUser" not in node and "User" not in node
    assert node["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_BIND_SERVICE"]
    assert node["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX AF_NETLINK"]
    assert "--node-name ${KYB_NODE_NAME}" in node["ExecStart"][0]
    for name in ("kyb@.service", "kyb-node@.service", "kyb-kubelet.service"):
        assert "$KYB_NET_ARGS $KYB_ARGS" in units[name]["ExecStart"][0], name


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    probe = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"systemd-analyze does not run here: {probe.stderr.strip()}")
    return exe


@pytest.mark.parametrize("unit", ["kyb-nats.service", "kyb@api.service", "kyb@volumebinder.service",
                                  "kyb-node@netagent.service", "kyb-kubelet.service"])
def test_systemd_analyze_verify(control_plane, unit):
    exe = _systemd_analyze()
    units = control_plane / "etc" / "systemd" / "system"
    if "@" in unit:
        (units / unit).symlink_to(unit.split("@")[0] + "@.service")
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


def serve_options(argv: list[str]) -> dict[str, str]:
    """The service options `kyb serve NAME ...` (argv) gives: its own flags and the extra ones."""
    own = {"--nats": "nats", "--node-name": "node_name", "--runtime": "runtime"}
    out: dict[str, str] = {}
    rest: list[str] = []
    words = iter(argv[3:])
    for word in words:
        if word in own:
            out[own[word]] = next(words)
        else:
            rest.append(word)
    return {**extra_options(rest), **out}


def test_the_kubelet_runs_the_cni_network_on_the_node_ip(control_plane):
    from services.kubelet.service import KubeletOptions

    env = read_env(control_plane / "etc" / "kybernetes" / "kyb.env")
    argv = exec_start(control_plane / "etc" / "systemd" / "system" / "kyb-kubelet.service", "", env)
    opts = KubeletOptions.from_dict(serve_options(argv))
    assert (opts.node_name, opts.network, opts.node_ip) == ("n1", "cni", NODE_IP)
    assert opts.cni_conf_dir == "/etc/cni/net.d" and opts.state_dir == "/var/lib/kybernetes/kubelet"
    # a loopback node's empty KYB_NODE_IP leaves the kubelet's default
    loopback = KubeletOptions.from_dict(serve_options(exec_start(
        control_plane / "etc" / "systemd" / "system" / "kyb-kubelet.service", "",
        {**env, "KYB_NODE_IP": "", "KYB_NET_ARGS": "--network loopback"})))
    assert (loopback.network, loopback.node_ip) == ("loopback", "127.0.0.1")


def test_kyb_unit_command_line_serves_the_api(tmp_path, nats_url):
    """What kyb@api.service starts (with the env file bootstrap wrote) answers `kyb version`, and
    gives a Service a ClusterIP of the pod network's service CIDR."""
    done = bootstrap(tmp_path, "--role", "control-plane", "--node-name", "n1", "--runtime", "process",
                     "--nats-url", nats_url, "--node-ip", NODE_IP)
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
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
        applied = subprocess.run([str(VENV / "bin" / "kyb"), "--nats", nats_url, "apply", "-f", "-"],
                                 input=json.dumps(service), capture_output=True, text=True, timeout=30, check=False)
        assert applied.returncode == 0, applied.stderr
        got = subprocess.run([str(VENV / "bin" / "kyb"), "--nats", nats_url, "get", "svc", "web", "-o", "json"],
                             capture_output=True, text=True, timeout=30, check=False)
        cluster_ip = json.loads(got.stdout)["spec"]["clusterIP"]
        assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network("10.96.0.0/12")
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_kyb_node_unit_command_line_routes_the_pod_network(tmp_path, nats_url, netns: Namespaces):  # noqa: F811
    """What kyb-node@netagent.service starts with the env file bootstrap wrote is the netagent of
    the node in network cni: the unreachable routes of the cluster and service CIDRs appear. It
    programs a namespace the test made (``--netns``, as /etc/kybernetes/netagent.env could say),
    never this machine's."""
    done = bootstrap(tmp_path, "--role", "worker", "--node-name", "w1", "--nats-url", nats_url, "--node-ip", NODE_IP)
    assert done.returncode == 0, done.stderr
    host = netns.add("host")
    env = {**read_env(tmp_path / "etc" / "kybernetes" / "kyb.env"), "KYB_ARGS": f"--netns {Namespaces.path(host)}"}
    argv = exec_start(tmp_path / "etc" / "systemd" / "system" / "kyb-node@.service", "netagent", env)
    assert argv[:6] == [str(VENV / "bin" / "kyb"), "serve", "netagent", "--nats", nats_url, "--node-name"]
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def unreachable() -> set[str]:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            routes = json.loads(netns.exec(host, "ip", "-j", "route", "show", "proto", ROUTE_PROTO).stdout or "[]")
            return {r["dst"] for r in routes if r.get("type") == "unreachable"}

        want = {"10.244.0.0/16", "10.96.0.0/12"}  # routed one after the other: wait for both
        assert wait_until(lambda: got if (got := unreachable()) >= want else None, 30,
                          "the netagent's routes") == want
    finally:
        _stop(proc)
