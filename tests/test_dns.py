"""Cluster DNS on a real nats-server with api and endpoints in-process, queried with dig
(Debian's dnsutils): services, headless pods, SRV records, NXDOMAIN, and answers that follow
readiness and deletion."""

from __future__ import annotations

import asyncio
import os
import random
import shutil

import nats
import pytest

from tests.test_proxy_helpers import FAST, NetCluster, random_subnet, wait_for

DIG = shutil.which("dig")
if DIG is None and os.environ.get("KYB_REQUIRE_DOCKER") != "1":
    pytest.skip("dig is not installed (apt-get install -y dnsutils)", allow_module_level=True)


async def dig(server: tuple[str, int], name: str, qtype: str = "A", *flags: str) -> tuple[str, list[str]]:
    """(status, answer lines) as dig prints them."""
    assert DIG is not None, "dig is required (apt-get install -y dnsutils)"
    proc = await asyncio.create_subprocess_exec(
        DIG, f"@{server[0]}", "-p", str(server[1]), name, qtype, "+time=2", "+tries=1", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    text = out.decode()
    status = text.split("status: ", 1)[1].split(",", 1)[0] if "status: " in text else "NO-REPLY"
    answers, in_answer = [], False
    for line in text.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            in_answer = True
        elif in_answer and not line.strip():
            in_answer = False
        elif in_answer:
            answers.append(line.split()[-1])
    return status, sorted(answers)


@pytest.fixture
async def dns(nats_url):
    nc = await nats.connect(nats_url)
    server = (f"127.{random.randint(60, 90)}.{random.randint(0, 255)}.53", random.randint(20000, 29999))
    c = NetCluster(nc, nats_url, {**FAST, "dns_address": server[0], "dns_port": server[1]})
    c.server = server
    c.subnet = random_subnet()
    await c.start("api", "endpoints", "dns")
    try:
        yield c
    finally:
        await c.close()
        await nc.close()


async def test_service_names_resolve_with_dig(dns):
    svc = await dns.service("web")
    cip = svc["spec"]["clusterIP"]

    async def resolved():
        return await dig(dns.server, "web.default.svc.cluster.local") == ("NOERROR", [cip])

    await wait_for(resolved, 10, "web resolves to its ClusterIP")
    status, srv = await dig(dns.server, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert status == "NOERROR" and srv == ["web.default.svc.cluster.local."]
    assert (await dig(dns.server, "nope.default.svc.cluster.local"))[0] == "NXDOMAIN"
    # Over TCP as well.
    assert await dig(dns.server, "web.default.svc.cluster.local", "A", "+tcp") == ("NOERROR", [cip])


async def test_headless_service_follows_ready_pods(dns):
    await dns.service("db", clusterIP="None")
    await dns.pod("db-0", f"{dns.subnet}.1", {"app": "db"})
    await dns.pod("db-1", f"{dns.subnet}.2", {"app": "db"})
    both = sorted([f"{dns.subnet}.1", f"{dns.subnet}.2"])

    async def answers(expected):
        return await dig(dns.server, "db.default.svc.cluster.local") == ("NOERROR", expected)

    await wait_for(lambda: answers(both), 10, "both pods in the headless answer")
    await dns.set_ready("db-1", False)
    await wait_for(lambda: answers([f"{dns.subnet}.1"]), 5, "not-ready pod dropped from DNS")
    await dns.api.delete("svc", "default", "db")

    async def gone():
        return (await dig(dns.server, "db.default.svc.cluster.local"))[0] == "NXDOMAIN"

    await wait_for(gone, 5, "deleted service is NXDOMAIN")
