"""Container health check of a `kyb serve NAME` container (the compose healthcheck runs it).

Healthy when the service process (PID 1) holds an established connection to NATS, NATS answers
a round trip from here, and, for the api service, a `kyb.api.list` request comes back with
status 200. The service name and NATS URL are read from PID 1's command line, so every service
shares the same check. Exit 0 = healthy, 1 = unhealthy (with the reason on stderr).
"""

from __future__ import annotations

import asyncio
import json
import sys
from urllib.parse import urlsplit

import nats
import psutil

TIMEOUT = 3.0


def service_command(pid: int = 1) -> tuple[str, str]:
    """(service name, NATS URL) from ``kyb serve NAME --nats URL`` (or KYB_NATS_URL)."""
    proc = psutil.Process(pid)
    argv = proc.cmdline()
    if "serve" not in argv or argv.index("serve") + 1 >= len(argv):
        raise RuntimeError(f"PID {pid} is not `kyb serve NAME`: {' '.join(argv)}")
    name = argv[argv.index("serve") + 1]
    url = proc.environ().get("KYB_NATS_URL", "nats://127.0.0.1:4222")
    for i, arg in enumerate(argv):
        if arg == "--nats" and i + 1 < len(argv):
            url = argv[i + 1]
        elif arg.startswith("--nats="):
            url = arg.split("=", 1)[1]
    return name, url


def connected_to(pid: int, port: int) -> bool:
    """Whether the process has an established TCP connection to ``port``."""
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return any(c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == port for c in conns)


async def check(name: str, url: str) -> None:
    nc = await nats.connect(url, connect_timeout=TIMEOUT, allow_reconnect=False, name="kyb-healthcheck")
    try:
        await nc.flush(timeout=TIMEOUT)
        if name == "api":
            body = json.dumps({"kind": "namespaces", "namespace": None}).encode()
            reply = await nc.request("kyb.api.list", body, timeout=TIMEOUT)
            status = (reply.headers or {}).get("Kyb-Status", "")
            if status != "200":
                raise RuntimeError(f"api answered kyb.api.list with status {status or 'none'}")
    finally:
        await nc.close()


def main() -> int:
    try:
        name, url = service_command()
        port = urlsplit(url).port or 4222
        if not connected_to(1, port):
            raise RuntimeError(f"{name} holds no connection to NATS port {port}")
        asyncio.run(asyncio.wait_for(check(name, url), TIMEOUT * 3))
    except Exception as e:  # any failure is "unhealthy", said once
        print(f"unhealthy: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"{name}: healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
