"""ApiClient on a real nats-server, with a small responder standing in for the api service:
what goes on the wire (subjects, headers, bodies) and how replies and failures come back."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from kyb import errors
from kyb.client import MAX_PAYLOAD, ApiClient, connect
from kyb.natsd import free_port


class Responder:
    """Answers kyb.api.* with canned replies and records the requests it saw."""

    def __init__(self, nc, replies: dict[str, tuple[dict, dict]]) -> None:
        self.nc = nc
        self.replies = replies
        self.seen: list[tuple[str, dict, bytes]] = []

    async def start(self) -> None:
        async def handle(msg) -> None:
            verb = msg.subject.rsplit(".", 1)[1]
            self.seen.append((verb, dict(msg.headers or {}), msg.data))
            body, headers = self.replies[verb]
            await self.nc.publish(msg.reply, json.dumps(body).encode(), headers=headers)

        await self.nc.subscribe("kyb.api.*", queue="api", cb=handle)
        await self.nc.flush()


CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}}
STORED = dict(CM, metadata={"name": "cfg", "namespace": "team", "resourceVersion": "7"})


async def test_apply_sends_the_manifest_and_namespace_and_returns_object_and_result(nc) -> None:
    responder = Responder(nc, {"apply": (STORED, {"Kyb-Status": "201", "Kyb-Result": "created"})})
    await responder.start()
    obj, result = await ApiClient(nc).apply(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n", "team")
    assert (obj, result) == (STORED, "created")
    verb, headers, body = responder.seen[0]
    assert verb == "apply" and headers["Kyb-Namespace"] == "team"
    assert body.startswith(b"apiVersion: v1")


async def test_queries_carry_the_protocol_fields(nc) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": [STORED]}
    responder = Responder(nc, {
        "get": (STORED, {"Kyb-Status": "200"}),
        "list": (listing, {"Kyb-Status": "200"}),
        "delete": (STORED, {"Kyb-Status": "200"}),
        "replace": (STORED, {"Kyb-Status": "200"}),
    })
    await responder.start()
    api = ApiClient(nc)
    assert await api.get("cm", "team", "cfg") == STORED
    assert await api.list("cm", None, "app=web", "metadata.name=cfg") == [STORED]
    assert await api.delete("cm", "team", "cfg", "Foreground", "7") == STORED
    assert await api.replace(CM, "team") == STORED
    bodies = {verb: body for verb, _, body in responder.seen}
    assert json.loads(bodies["get"]) == {"kind": "cm", "namespace": "team", "name": "cfg"}
    assert json.loads(bodies["list"]) == {"kind": "cm", "namespace": None, "labelSelector": "app=web",
                                          "fieldSelector": "metadata.name=cfg"}
    assert json.loads(bodies["delete"]) == {"kind": "cm", "namespace": "team", "name": "cfg",
                                            "propagationPolicy": "Foreground", "resourceVersion": "7"}
    assert json.loads(bodies["replace"]) == CM
    assert await api.delete("cm", "team", "cfg", grace_period_seconds=0) == STORED
    last_delete = [body for verb, _, body in responder.seen if verb == "delete"][-1]
    assert json.loads(last_delete)["gracePeriodSeconds"] == 0


async def test_failures_come_back_as_typed_errors_with_details(nc) -> None:
    status = errors.Invalid("ConfigMap \"cfg\" is invalid", [errors.FieldError("data", "too big")]).to_status()
    conflict = errors.Conflict("the object has been modified").to_status()
    responder = Responder(nc, {"create": (status, {"Kyb-Status": "422"}), "replace": (conflict, {"Kyb-Status": "409"})})
    await responder.start()
    with pytest.raises(errors.Invalid) as invalid:
        await ApiClient(nc).create(CM)
    assert invalid.value.details == [errors.FieldError("data", "too big")]
    with pytest.raises(errors.Conflict, match="has been modified"):
        await ApiClient(nc).replace(CM)


async def test_no_api_service_is_a_temporary_error_naming_the_subject(nc) -> None:
    with pytest.raises(errors.Temporary, match="no api service answered on kyb.api.apply"):
        await ApiClient(nc, timeout=0.5).apply(CM)


async def test_payloads_over_one_mebibyte_are_refused_before_sending(nc) -> None:
    responder = Responder(nc, {"apply": (STORED, {"Kyb-Status": "200"})})
    await responder.start()
    big = b"x" * (MAX_PAYLOAD + 1)
    with pytest.raises(errors.TooLarge, match=str(MAX_PAYLOAD + 1)):
        await ApiClient(nc).apply(big)
    assert responder.seen == []


async def test_requests_carry_a_traceparent_when_tracing_is_on(nc) -> None:
    from kyb import telemetry

    telemetry.init_telemetry("kyb-test")
    responder = Responder(nc, {"get": (STORED, {"Kyb-Status": "200"})})
    await responder.start()
    await ApiClient(nc).get("cm", "team", "cfg")
    traceparent = responder.seen[0][1].get("traceparent", "")
    assert traceparent.startswith("00-") and len(traceparent.split("-")) == 4


async def test_connect_to_nothing_fails_fast_with_one_line() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(errors.Unreachable) as e:
        await asyncio.wait_for(connect(url), 10)
    assert str(e.value) == f"cannot reach NATS at {url}: connection refused"
    assert time.monotonic() - started < 5


async def test_connect_moves_past_a_dead_server_of_a_cluster_list(nats_url) -> None:
    """With several servers listed, one that refuses is skipped rather than the whole connect failing."""
    dead = f"nats://127.0.0.1:{free_port()}"
    for order in ((dead, nats_url), (nats_url, dead)):
        nc = await asyncio.wait_for(connect(",".join(order), dont_randomize=True), 10)
        try:
            assert nc.is_connected
        finally:
            await nc.close()


async def test_connect_to_a_list_of_dead_servers_names_the_list() -> None:
    url = f"nats://127.0.0.1:{free_port()},nats://127.0.0.1:{free_port()}"
    with pytest.raises(errors.Unreachable, match=f"cannot reach NATS at {url}: "):
        await asyncio.wait_for(connect(url), 10)
