"""`kyb up --network cni --nodes 2`, run inside a network namespace the test made (``ip netns
exec``, no route out of it), so the bridges, the routes, the nftables tables and NATS (on that
namespace's 127.0.0.1) exist only there: each node gets its own bridge and pod range, a pod on
node-1 reaches a pod on node-2 by its 10.244.x.y address (the bridges' connected routes, no
netagent route "via" the host itself) and through its Service's ClusterIP of 10.96.0.0/12
(the nftables proxy), and a NetworkPolicy isolating the pod on node-2 is enforced by the one
netpol agent of the namespace. Everything is removed afterwards, also on failure: `kyb up`
stopped, the pods' processes and namespaces removed, the test namespace deleted (its bridges,
routes and tables with it)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from kyb.natsd import free_port
from services.kubelet.runtime.process import ProcessRuntime
from services.netagent.plan import ROUTE_PROTO
from tests.cluster import wait_until
from tests.netns import Namespaces, netns  # noqa: F401 (fixture)


class NsUp:
    def __init__(self, spaces: Namespaces, data: Path, *args: str) -> None:
        self.ns = spaces.add("up")
        self.data = data
        self.url = f"nats://127.0.0.1:{free_port()}"
        argv = [sys.executable, "-m", "kyb.cli.main", "up", "--network", "cni", "--runtime", "process",
                "--data-dir", str(data), "--nats-port", self.url.rsplit(":", 1)[1], "--node-name", "cni-up",
                "--apiserver-port", str(free_port()), "-o", f"state_dir={data / 'kubelet'}",
                "-o", f"ingress_http_port={free_port()}", "-o", f"ingress_https_port={free_port()}",
                "-o", f"dns_port={free_port()}", *args]
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
        # one node (state_dir) or several (nodes/<node>/)
        for state in [self.data / "kubelet", *sorted((self.data / "nodes").glob("*"))]:
            rt = ProcessRuntime(state / "process")
            for uid in asyncio.run(rt.list_sandboxes()):
                with contextlib.suppress(Exception):
                    asyncio.run(rt.remove_sandbox(uid))


def pod(name: str, command: list[str], app: str, node: str = "") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "none", "command": command}],
                     "terminationGracePeriodSeconds": 1, **({"nodeName": node} if node else {})}}


def test_kyb_up_cni_two_nodes_reach_each_others_pods_and_cluster_ips(netns: Namespaces, tmp_path) -> None:  # noqa: F811
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from cni\n")
    up = NsUp(netns, tmp_path / "state", "--nodes", "2")
    try:
        wait_until(lambda: up.proc.poll() is None and up.kyb("get", "ns").returncode == 0, 60, "kyb up's api")
        assert not any("loopback" in line for line in up.lines[:3]), up.lines[:3]
        manifests = [pod("web", ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", str(www)], "web", "node-2"),
                     pod("client", ["/bin/busybox", "sleep", "3600"], "client", "node-1"),
                     {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                      "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}]
        for m in manifests:
            done = up.kyb("apply", "-f", "-", input=json.dumps(m))
            assert done.returncode == 0, done.stderr

        def running(name: str) -> dict | None:
            p = up.get("pod", name)
            return p if p and p["status"].get("phase") == "Running" and p["status"].get("podIP") else None

        web = wait_until(lambda: running("web"), 60, "web Running")
        client = wait_until(lambda: running("client"), 60, "client Running")
        nodes = json.loads(up.kyb("get", "nodes", "-o", "json").stdout)["items"]
        ranges = {n["metadata"]["name"]: ipaddress.ip_network(n["spec"]["podCIDR"]) for n in nodes}
        assert ranges["node-1"] != ranges["node-2"]
        assert ipaddress.ip_address(web["status"]["podIP"]) in ranges["node-2"]
        assert ipaddress.ip_address(client["status"]["podIP"]) in ranges["node-1"]
        cip = up.get("service", "web")["spec"]["clusterIP"]
        assert ipaddress.ip_address(cip) in ipaddress.ip_network("10.96.0.0/12")

        def fetch(*addresses: str) -> subprocess.CompletedProcess[str]:
            # through the kubelet (kyb exec): the pods' namespaces are mounted in kyb up's mount namespace
            script = " && ".join(f"/bin/busybox wget -q -O - http://{a}/index.html" for a in addresses)
            return up.kyb("exec", "client", "--", "/bin/sh", "-c", script)

        # node-1's pod -> node-2's, by pod IP and through the ClusterIP
        pod_ip = f"{web['status']['podIP']}:8080"
        wait_until(lambda: fetch(pod_ip, cip).stdout.count("hello from cni") == 2, 30, "client on node-1 fetches web")
        table = subprocess.run(["ip", "netns", "exec", up.ns, "nft", "list", "table", "ip", "kyb-proxy"],
                               capture_output=True, text=True).stdout
        assert f"{cip} . tcp . 80" in table
        # the bridges' connected routes carry node-1 <-> node-2: the netagent adds no route via ourselves
        routes = json.loads(netns.exec(up.ns, "ip", "-j", "route", "show", "proto", ROUTE_PROTO).stdout or "[]")
        assert routes and all(r.get("type") == "unreachable" for r in routes), routes

        # the namespace's one netpol agent enforces for node-2's pods too
        deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny-web"},
                "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}
        done = up.kyb("apply", "-f", "-", input=json.dumps(deny))
        assert done.returncode == 0, done.stderr
        wait_until(lambda: fetch(pod_ip).returncode != 0, 30, "web isolated by its policy")
    finally:
        up.stop()
    # the proxy removed its table when kyb up stopped
    left = subprocess.run(["ip", "netns", "exec", up.ns, "nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "kyb-proxy" not in left
