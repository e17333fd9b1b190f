"""Kernel networking for tests: network namespaces, veth pairs and bridges the test itself
creates, and the gate for machines that cannot make them.

Everything here lives inside namespaces named ``kybt<random>-...`` that the test made; nothing
touches the machine's own namespace beyond creating and deleting those names. Without root,
``ip``, ``nsenter`` or the CNI plugins a test is skipped with the reason, and fails instead
when ``KYB_REQUIRE_DOCKER=1`` (as ``.ci/run`` sets), like the Docker tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence

import pytest

from services.kubelet.cni.spec import DEFAULT_PLUGIN_DIRS, find_plugin

PLUGINS = ("bridge", "host-local", "portmap", "firewall", "loopback")


def networking_missing() -> str | None:
    """Why this machine cannot run the kernel networking tests, or None."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2, util-linux)"
    missing = [p for p in PLUGINS if find_plugin(p, DEFAULT_PLUGIN_DIRS) is None]
    if missing:
        return f"CNI plugins missing in {list(DEFAULT_PLUGIN_DIRS)}: {missing} (containernetworking-plugins)"
    probe = f"kybt{secrets.token_hex(3)}-probe"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def require_networking() -> None:
    why = networking_missing()
    if why is None:
        return
    if os.environ.get("KYB_REQUIRE_DOCKER") == "1":
        pytest.fail(f"KYB_REQUIRE_DOCKER=1 but {why}")
    pytest.skip(why)


def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done


class Namespaces:
    """Network namespaces of one test, all removed by :meth:`close` (links inside go with them)."""

    def __init__(self) -> None:
        self.prefix = f"kybt{secrets.token_hex(3)}"
        self.names: list[str] = []

    def add(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        run("ip", "netns", "add", name)
        self.names.append(name)
        self.exec(name, "ip", "link", "set", "lo", "up")
        return name

    @staticmethod
    def path(name: str) -> str:
        return f"/run/netns/{name}"

    def exec(self, name: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", name, *argv, check=check, timeout=timeout)

    def veth(self, a: str, a_if: str, b: str, b_if: str) -> None:
        """A veth pair between namespaces ``a`` and ``b``, created inside ``a``."""
        self.exec(a, "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b)
        self.exec(a, "ip", "link", "set", a_if, "up")
        self.exec(b, "ip", "link", "set", b_if, "up")

    def addresses(self, name: str) -> list[str]:
        doc = json.loads(self.exec(name, "ip", "-j", "-4", "addr").stdout or "[]")
        return [a["local"] for link in doc for a in link.get("addr_info", [])]

    def close(self) -> None:
        for name in reversed(self.names):
            # processes still inside keep a namespace alive; kill them first
            pids = run("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            run("ip", "netns", "del", name, check=False)
        self.names.clear()


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    require_networking()
    spaces = Namespaces()
    try:
        yield spaces
    finally:
        spaces.close()


def ipam_allocations(data_dir: str, network: str) -> list[str]:
    """host-local's allocation files (one per address held) in its store for ``network``."""
    path = os.path.join(data_dir, network)
    if not os.path.isdir(path):
        return []
    return sorted(n for n in os.listdir(path) if n not in ("lock",) and not n.startswith("last_reserved_ip"))


def busybox() -> Sequence[str] | None:
    path = shutil.which("busybox") or ("/bin/busybox" if os.path.exists("/bin/busybox") else None)
    return [path] if path else None
