"""`kyb up --network cni`, run inside a network namespace the test made (``ip netns exec``), so
the bridge, the routes, table ``ip kyb-proxy`` and NATS (on that namespace's 127.0.0.1) exist
only there: a pod gets a 10.244.x.y address, its Service a ClusterIP of 10.96.0.0/12 served by
the nftables proxy, and another pod reaches it through that. Everything is removed afterwards,
also on failure: `kyb up` stopped, the pods' processes and namespaces removed, the test
namespace deleted (its bridge, routes and table with it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from kyb.natsd import free_port
from services.kubelet.runtime.process import ProcessRuntime
from tests.cluster import wait_until
from tests.netns import Namespaces, netns  # noqa: F401 (fixture)


class NsUp:
    def __init__(self, spaces: Namespaces, data: Path) -> None:
        self.ns = spaces.add("up")
        self.data = data
        self.url = f"nats://127.0.0.1:{free_port()}"
        argv = [sys.executable, "-m", "kyb.cli.main", "up", "--network", "cni", "--runtime", "process",
                "--data-dir", str(data), "--nats-port", self.url.rsplit(":", 1)[1], "--node-name", "cni-up",
                "--apiserver-port", str(free_port()), "-o", f"state_dir={data / 'kubelet'}",
                "-o", f"ingress_http_port={free_port()}", "-o", f"ingress_https_port={free_port()}",
                "-o", f"dns_port={free_port()}"]
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: [self.lines.append(x) for x in self.proc.stdout], daemon=True).start()

    def kyb(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KYB_NATS_")}
        env["KYB_DATA_DIR"] = str(self.data)
        return subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-m", "kyb.cli.main", "--nats", self.url,
                               *args], input=input, capture_output=True, text=True, timeout=60, env=env)

    def get(self, kind: str, name: str) -> dict | None:
        done = self.kyb("get", kind, name, "-o", "json")
        return json.loads(done.stdout) if done.returncode == 0 else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rt = ProcessRuntime(self.data / "kubelet" / "process")
        for uid in asyncio.run(rt.list_sandboxes()):
            with contextlib.suppress(Exception):
                asyncio.run(rt.remove_sandbox(uid))


def pod(name: str, command: list[str], app: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "none", "command": command}],
                     "terminationGracePeriodSeconds": 1}}


def test_kyb_up_cni_serves_cluster_ips_through_nftables(netns: Namespaces, tmp_path) -> None:  # noqa: F811
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from cni\n")
    up = NsUp(netns, tmp_path / "state")
    try:
        wait_until(lambda: up.proc.poll() is None and up.kyb("get", "ns").returncode == 0, 60, "kyb up's api")
        assert not any("loopback" in line for line in up.lines[:3]), up.lines[:3]
        manifests = [pod("web", ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", str(www)], "web"),
                     pod("client", ["/bin/busybox", "sleep", "3600"], "client"),
                     {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                      "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}]
        for m in manifests:
            done = up.kyb("apply", "-f", "-", input=json.dumps(m))
            assert done.returncode == 0, done.stderr

        def running(name: str) -> dict | None:
            p = up.get("pod", name)
            return p if p and p["status"].get("phase") == "Running" and p["status"].get("podIP") else None

        web = wait_until(lambda: running("web"), 60, "web Running")
        wait_until(lambda: running("client"), 60, "client Running")
        assert web["status"]["podIP"].startswith("10.244.")
        cip = up.get("service", "web")["spec"]["clusterIP"]
        assert cip.startswith(("10.96.", "10.97.", "10.98.", "10.99.", "10.10", "10.11"))

        def fetched() -> bool:
            # through the kubelet (kyb exec): the pods' namespaces are mounted in kyb up's mount namespace
            done = up.kyb("exec", "client", "--", "/bin/busybox", "wget", "-q", "-O", "-",
                          f"http://{cip}/index.html")
            assert "hello from cni" in done.stdout, (done.stdout, done.stderr)
            return True

        for _ in range(30):
            with contextlib.suppress(AssertionError):
                fetched()
                break
        else:
            fetched()
        table = subprocess.run(["ip", "netns", "exec", up.ns, "nft", "list", "table", "ip", "kyb-proxy"],
                               capture_output=True, text=True).stdout
        assert f"{cip} . tcp . 80" in table
    finally:
        up.stop()
    # the proxy removed its table when kyb up stopped
    left = subprocess.run(["ip", "netns", "exec", up.ns, "nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "kyb-proxy" not in left
