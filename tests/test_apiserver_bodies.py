"""What users send the apiserver is decoded under schemas.limits before anything reaches the
bus: hostile bodies are a 4xx Status naming the problem, never a 500. The app is served by
aiohttp's test server with a NATS connection that must not be used."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas import limits
from services.apiserver.routes import Server

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class NoBus:
    """Stands in for NATS: any use of it fails the test."""

    def jetstream(self):
        return self

    def __getattr__(self, name):
        raise AssertionError(f"a refused body reached the bus ({name})")


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\n" + "\n".join(lines) + "\n"


CASES = [
    pytest.param("POST", "/api/v1/namespaces/default/configmaps", "application/yaml", _bomb().encode(), 400,
                 "alias", id="yaml-alias-bomb"),
    pytest.param("POST", "/api/v1/namespaces/default/configmaps", "application/json",
                 b"[" * (limits.MAX_DEPTH + 5) + b"]" * (limits.MAX_DEPTH + 5), 400, "deep", id="deep-json"),
    pytest.param("POST", "/api/v1/namespaces/default/configmaps", "application/json",
                 json.dumps({"data": {"k": "v" * (limits.MAX_BYTES + 10)}}).encode(), 413, "too large",
                 id="huge-json"),
    pytest.param("POST", "/api/v1/namespaces/default/configmaps", "application/vnd.kubernetes.protobuf",
                 b"k8s\x00" + b"\x00" * (limits.MAX_BYTES + 1), 413, "larger", id="huge-protobuf"),
    pytest.param("PATCH", "/apis/apps/v1/namespaces/default/deployments/x", "application/apply-patch+yaml",
                 _bomb().encode(), 422, "fieldManager", id="apply-without-field-manager"),
    pytest.param("PATCH", "/apis/apps/v1/namespaces/default/deployments/x?fieldManager=m",
                 "application/apply-patch+yaml", _bomb().encode(), 400, "alias", id="apply-alias-bomb"),
    pytest.param("PATCH", "/api/v1/namespaces/default/configmaps/x", "application/merge-patch+json", b"{nope",
                 400, "patch", id="bad-patch"),
    pytest.param("DELETE", "/api/v1/namespaces/default/configmaps", "application/json", b"{nope", 400,
                 "DeleteOptions", id="bad-deletecollection-options"),
    pytest.param("DELETE", "/api/v1/namespaces/default/configmaps/x", "application/json",
                 b"[" * (limits.MAX_DEPTH + 5), 400, "DeleteOptions", id="deep-delete-options"),
    pytest.param("POST", "/api/v1/namespaces/default/events", "application/yaml", _bomb().encode(), 400, "alias",
                 id="event-alias-bomb"),
    pytest.param("POST", "/api/v1/namespaces/default/pods/x/eviction", "application/json", b"{nope", 400,
                 "not valid", id="bad-eviction"),
    pytest.param("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json", b"[1]",
                 400, "object", id="review-not-an-object"),
    pytest.param("GET", "/api/v1/namespaces/default/configmaps?continue=e30K%25%25", "application/json", b"", 400,
                 "continue", id="bad-continue-token"),
]


@pytest.mark.parametrize(("method", "path", "ctype", "body", "code", "says"), CASES)
def test_hostile_bodies_are_refused_before_the_bus(method, path, ctype, body, code, says):
    async def main():
        server = Server(NoBus(), TOKEN)
        async with TestClient(TestServer(server.app())) as client:
            resp = await client.request(method, path, data=body, headers={**AUTH, "Content-Type": ctype})
            doc = await resp.json()
        return resp.status, doc

    status, doc = asyncio.run(main())
    assert status == code, doc
    assert doc["kind"] == "Status" and doc["code"] == code
    assert says.lower() in doc["message"].lower(), doc["message"]
