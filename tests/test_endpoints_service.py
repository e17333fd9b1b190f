"""The endpoints service on a real nats-server with the api in front: Endpoints and
EndpointSlices follow pods' readiness, named ports resolve, user-managed Endpoints stay."""

from __future__ import annotations

import nats
import pytest

from tests.test_proxy_helpers import FAST, NetCluster, random_subnet, wait_for


@pytest.fixture
async def net(nats_url):
    nc = await nats.connect(nats_url)
    c = NetCluster(nc, nats_url, FAST)
    c.subnet = random_subnet()
    await c.start("api", "endpoints")
    try:
        yield c
    finally:
        await c.close()
        await nc.close()


async def addresses(net, name: str) -> tuple[list[str], list[str], list[int]]:
    ep = await net.store.get("Endpoints", "default", name)
    ready = sorted(a.ip for s in ep.subsets for a in s.addresses)
    not_ready = sorted(a.ip for s in ep.subsets for a in s.notReadyAddresses)
    ports = sorted({p.port for s in ep.subsets for p in s.ports})
    return ready, not_ready, ports


async def test_endpoints_and_slices_follow_readiness(net):
    a, b = f"{net.subnet}.1", f"{net.subnet}.2"
    await net.pod("web-0", a, {"app": "web"}, port=8081)
    await net.pod("web-1", b, {"app": "web"}, ready=False, port=8081)
    await net.service("web")

    async def state(expected):
        return await addresses(net, "web") == expected

    await wait_for(lambda: state(([a], [b], [8081])), 10, "ready and not-ready addresses with the named port")
    await net.set_ready("web-1", True)
    await wait_for(lambda: state(([a, b], [], [8081])), 5, "readiness change reflected")

    async def web_slices():
        return [s for s in await net.store.list("EndpointSlice", "default")
                if s.metadata.labels.get("kubernetes.io/service-name") == "web"]

    async def slice_ready():  # the slice is written after the Endpoints: it may come a moment later
        slices = await web_slices()
        return len(slices) == 1 and sorted(e.addresses[0] for e in slices[0].endpoints if e.conditions.ready) == [a, b]

    await wait_for(slice_ready, 5, "the slice's ready endpoints: both pods")
    slices = await web_slices()
    assert len(slices) == 1 and slices[0].metadata.ownerReferences[0].kind == "Service"

    await net.store.delete("Pod", "default", "web-0", grace_period_seconds=0)
    await wait_for(lambda: state(([b], [], [8081])), 5, "deleted pod removed")
    await net.api.delete("svc", "default", "web")

    async def gone():
        remaining = [s for s in await net.store.list("EndpointSlice", "default")
                     if s.metadata.labels.get("kubernetes.io/service-name") == "web"]
        eps = await net.store.list("Endpoints", "default")
        return not remaining and all(e.metadata.name != "web" for e in eps)

    await wait_for(gone, 5, "endpoints removed with the service")


async def test_service_without_selector_keeps_user_endpoints(net):
    await net.api.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "default"},
                         "spec": {"ports": [{"port": 80}]}})
    await net.api.apply({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext", "namespace": "default"},
                         "subsets": [{"addresses": [{"ip": "127.9.9.9"}], "ports": [{"port": 9000}]}]})
    # A selected service next to it proves the controller is working meanwhile.
    await net.pod("web-0", f"{net.subnet}.1", {"app": "web"})
    await net.service("web")
    await wait_for(lambda: addresses(net, "web"), 10, "controller active")
    assert await addresses(net, "ext") == (["127.9.9.9"], [], [9000])
