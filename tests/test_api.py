"""The api service on a real nats-server, driven the way any NATS client would: raw requests
to kyb.api.*; every bad input gets a Status naming the field and nothing is written."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import nats
import pytest

from kyb import errors
from kyb.store import Store
from schemas.core import ConfigMap

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
"""


async def call(nc, verb: str, body: bytes | dict, **headers) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg = await nc.request(f"kyb.api.{verb}", data, timeout=10, headers=headers or None)
    return int(msg.headers["Kyb-Status"]), json.loads(msg.data)


async def stored(nc, kind: str, ns: str | None, name: str):
    store = Store(nc.jetstream())
    try:
        return await store.get(kind, ns, name)
    except errors.NotFound:
        return None


async def test_raw_publish_of_a_manifest_stores_it_with_defaults(api_nc):
    code, obj = await call(api_nc, "apply", DEPLOYMENT.encode())
    assert code == 201, obj
    assert obj["metadata"]["namespace"] == "default" and obj["metadata"]["uid"]
    strategy = obj["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert obj["spec"]["revisionHistoryLimit"] == 10 and obj["spec"]["progressDeadlineSeconds"] == 600
    got = await stored(api_nc, "Deployment", "default", "web")
    assert got is not None and got.metadata.resourceVersion == obj["metadata"]["resourceVersion"]


async def test_reapply_is_idempotent_and_changes_bump_generation(api_nc):
    code, first = await call(api_nc, "apply", DEPLOYMENT.encode())
    assert code == 201
    msg = await api_nc.request("kyb.api.apply", DEPLOYMENT.encode(), timeout=10)
    assert msg.headers["Kyb-Result"] == "unchanged"
    again = json.loads(msg.data)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert again["metadata"]["generation"] == 1
    code, changed = await call(api_nc, "apply", DEPLOYMENT.replace("replicas: 2", "replicas: 3").encode())
    assert code == 200 and changed["metadata"]["generation"] == 2 and changed["spec"]["replicas"] == 3
    # A label-only change is not a spec change.
    code, labelled = await call(api_nc, "apply", DEPLOYMENT.replace("replicas: 2", "replicas: 3").replace(
        "labels: {app: web}\nspec:\n  replicas", "labels: {app: web, tier: front}\nspec:\n  replicas").encode())
    assert code == 200 and labelled["metadata"]["generation"] == 2
    assert labelled["metadata"]["labels"] == {"app": "web", "tier": "front"}


async def test_get_list_and_delete(api_nc):
    await call(api_nc, "apply", DEPLOYMENT.encode())
    code, obj = await call(api_nc, "get", {"kind": "deploy", "namespace": "default", "name": "web"})
    assert code == 200 and obj["kind"] == "Deployment"
    code, lst = await call(api_nc, "list", {"kind": "deployments", "namespace": None, "labelSelector": "app=web"})
    assert code == 200 and [i["metadata"]["name"] for i in lst["items"]] == ["web"]
    code, lst = await call(api_nc, "list", {"kind": "deployments", "labelSelector": "app!=web"})
    assert lst["items"] == []
    code, _ = await call(api_nc, "delete", {"kind": "deployment", "namespace": "default", "name": "web"})
    assert code == 200
    assert await stored(api_nc, "Deployment", "default", "web") is None


async def test_a_list_comes_in_pages_and_the_client_follows_them(api_nc):
    from kyb.client import ApiClient

    for i in range(5):
        await call(api_nc, "apply", {"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": f"page-{i}", "labels": {"paged": "yes"}}})
    query = {"kind": "configmaps", "namespace": "default", "labelSelector": "paged=yes", "limit": 2}
    code, first = await call(api_nc, "list", query)
    assert code == 200 and [i["metadata"]["name"] for i in first["items"]] == ["page-0", "page-1"]
    assert first["metadata"]["remainingItemCount"] == 3
    code, second = await call(api_nc, "list", query | {"continue": first["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in second["items"]] == ["page-2", "page-3"]
    code, bad = await call(api_nc, "list", query | {"continue": "not-a-token"})
    assert code == 400 and [d["field"] for d in bad["details"]] == ["continue"]
    got = await ApiClient(api_nc).list("configmaps", "default", "paged=yes", page=2)
    assert [i["metadata"]["name"] for i in got] == [f"page-{i}" for i in range(5)]


def test_a_list_reply_stops_before_the_message_size_limit():
    from services.api.service import after_token, list_reply

    items = [msgspec.convert({"metadata": {"name": f"cm-{i:02}", "namespace": "default"}, "data": {"k": "v" * 100}},
                             ConfigMap) for i in range(20)]
    reply = list_reply(items, None, 1000)
    doc = json.loads(reply)
    assert 0 < len(doc["items"]) < 20 and len(reply) <= 1000
    assert doc["metadata"]["remainingItemCount"] == 20 - len(doc["items"])
    assert after_token(doc["metadata"]["continue"]) == ("default", doc["items"][-1]["metadata"]["name"])
    whole = json.loads(list_reply(items, None, 1 << 20))
    assert len(whole["items"]) == 20 and whole["metadata"] == {}


@pytest.mark.parametrize(
    "body, code, field",
    [
        pytest.param(b"apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n", 400, None, id="invalid-yaml"),
        pytest.param(b"- apiVersion: v1\n  kind: Pod\n", 400, None, id="list-not-object"),
        pytest.param(b"apiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n", 400, "kind", id="unknown-kind"),
        pytest.param(b"apiVersion: apps/v9\nkind: Deployment\nmetadata: {name: g}\n", 400, "kind", id="unknown-apiversion"),
        pytest.param(
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: i\n    imagePullPolicyy: Always\n",
            422, "spec.containers[0]", id="unknown-field"),
        pytest.param(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {a: b}}\n", 422, "metadata.name", id="missing-name"),
        pytest.param(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n", 422, "metadata.name", id="invalid-name"),
        pytest.param(
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: i\n    ports: [{containerPort: 70000}]\n",
            422, "spec.containers[0].ports[0].containerPort", id="port-out-of-range"),
        pytest.param(
            b"apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: r}\nspec:\n  selector: {matchExpressions: [{key: a, operator: Maybe}]}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: i}]}\n",
            422, "spec.selector", id="bad-label-selector"),
        pytest.param(
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: {name: c}\n", 422, "spec.containers", id="object-where-list-belongs"),
        pytest.param(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: nowhere}\n", 404, "metadata.namespace", id="missing-namespace"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(api_nc, body, code, field):
    got_code, status = await call(api_nc, "apply", body)
    assert got_code == code, status
    assert status["kind"] == "Status" and status["code"] == code and status["message"]
    assert set(status) >= {"code", "reason", "message", "details"}
    if field is not None:
        fields = [d["field"] for d in status["details"]]
        assert any(f.startswith(field) for f in fields), (field, status)
    for kind in ("Pod", "ConfigMap", "ReplicaSet"):
        for name in ("p", "c", "r", "g"):
            assert await stored(api_nc, kind, "default", name) is None


async def test_oversized_payload_is_refused(api_nc):
    big = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n  x: " + b"a" * (2 * 1024 * 1024) + b"\n"
    # The server's max_payload stops 10 MiB at the client; a 2 MiB body reaches the api only
    # when the server allows it. Either way nothing is stored and the error is clear.
    try:
        code, status = await call(api_nc, "apply", big)
    except nats.errors.MaxPayloadError:
        code, status = 413, {"reason": "RequestEntityTooLarge"}
    assert code == 413 and status["reason"] == "RequestEntityTooLarge"
    with pytest.raises(nats.errors.MaxPayloadError):
        await api_nc.request("kyb.api.apply", b"a" * (10 * 1024 * 1024), timeout=5)
    assert await stored(api_nc, "ConfigMap", "default", "big") is None


async def test_concurrent_replaces_exactly_one_wins(api_nc):
    code, obj = await call(api_nc, "apply", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {v: '0'}\n")
    rv = obj["metadata"]["resourceVersion"]

    def version(v: str) -> bytes:
        return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": rv}, "data": {"v": v}}).encode()

    results = await asyncio.gather(call(api_nc, "replace", version("1")), call(api_nc, "replace", version("2")))
    codes = sorted(c for c, _ in results)
    assert codes == [200, 409], results
    winner = next(o for c, o in results if c == 200)
    loser = next(o for c, o in results if c == 409)
    assert loser["reason"] == "Conflict"
    assert (await stored(api_nc, "ConfigMap", "default", "c")).data == winner["data"]


async def test_delete_of_missing_object_is_not_found(api_nc):
    code, status = await call(api_nc, "delete", {"kind": "pod", "namespace": "default", "name": "ghost"})
    assert code == 404 and status["reason"] == "NotFound" and "ghost" in status["message"]


async def test_unknown_verb_and_bad_query_get_the_same_error_shape(api_nc):
    code, status = await call(api_nc, "frobnicate", {"kind": "pod"})
    assert code == 404 and status["kind"] == "Status"
    code, status = await call(api_nc, "get", {"kind": "pod", "bogus": 1})
    assert code == 400 and status["kind"] == "Status"
    code, status = await call(api_nc, "get", {"kind": "gizmos", "name": "x"})
    assert code == 400 and "gizmos" in status["message"]


async def test_namespaces_exist_from_start_and_deleting_one_deletes_its_contents(api_nc):
    for ns in ("default", "kube-system"):
        code, _ = await call(api_nc, "get", {"kind": "namespace", "name": ns})
        assert code == 200
    await call(api_nc, "apply", b"apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n")
    code, _ = await call(api_nc, "apply", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team}\ndata: {a: b}\n")
    assert code == 201
    await call(api_nc, "apply", DEPLOYMENT.encode(), **{"Kyb-Namespace": "team"})
    code, ns = await call(api_nc, "delete", {"kind": "ns", "name": "team"})
    assert code == 200 and ns["metadata"]["deletionTimestamp"]
    deadline = time.monotonic() + 15
    while await stored(api_nc, "Namespace", None, "team") is not None:
        assert time.monotonic() < deadline, "namespace not gone"
        await asyncio.sleep(0.05)
    assert await stored(api_nc, "ConfigMap", "team", "c") is None
    assert await stored(api_nc, "Deployment", "team", "web") is None
    code, status = await call(api_nc, "delete", {"kind": "ns", "name": "default"})
    assert code == 403


async def test_writes_into_a_terminating_namespace_are_refused(api_nc):
    await call(api_nc, "apply", b"apiVersion: v1\nkind: Namespace\nmetadata: {name: going}\n")
    store = Store(api_nc.jetstream())
    ns = await store.get("Namespace", None, "going")
    await store.update(msgspec.structs.replace(ns, metadata=msgspec.structs.replace(ns.metadata, finalizers=["example.com/hold"])))
    await store.delete("Namespace", None, "going")
    await asyncio.sleep(0)  # the api's namespace cache follows the KV watch
    deadline = time.monotonic() + 10
    while True:
        code, status = await call(api_nc, "apply", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: going}\n")
        if code == 403 or time.monotonic() > deadline:
            break
        await call(api_nc, "delete", {"kind": "cm", "namespace": "going", "name": "c"})
        await asyncio.sleep(0.05)
    assert code == 403 and "terminated" in status["message"]


async def test_replacing_an_object_with_what_get_returned_changes_nothing(api_nc):
    """A `kyb edit` with no change, or a read-modify-write tool sending the object back, keeps
    the generation and the revision; applying the manifest again is then still unchanged."""
    code, applied = await call(api_nc, "apply", DEPLOYMENT.encode())
    assert code == 201
    code, got = await call(api_nc, "get", {"kind": "deploy", "namespace": "default", "name": "web"})
    code, same = await call(api_nc, "replace", json.dumps(got).encode())
    assert code == 200
    assert same["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"]
    assert same["metadata"]["generation"] == 1
    msg = await api_nc.request("kyb.api.apply", DEPLOYMENT.encode(), timeout=10)
    assert msg.headers["Kyb-Result"] == "unchanged"
    got["spec"]["replicas"] = 5
    code, changed = await call(api_nc, "replace", json.dumps(got).encode())
    assert code == 200 and changed["metadata"]["generation"] == 2


def test_reapplying_a_job_keeps_its_generated_selector_and_changes_nothing():
    """The Job controller gives a Job the selector and template labels Kubernetes generates;
    re-applying the manifest, which never held them, keeps them and is "unchanged"."""
    from services.api import admission
    from services.job.reconcile import with_generated_selector

    body = (b"apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec:\n  template:\n    spec:\n"
            b"      restartPolicy: Never\n      containers: [{name: main, image: busybox, command: [\"true\"]}]\n")
    doc = admission.parse_manifest(body)
    _, desired = admission.admit(doc, "default")
    desired = admission.with_last_applied(desired, doc)
    stored = msgspec.structs.replace(desired, metadata=msgspec.structs.replace(desired.metadata, uid="u-1"))
    stored = with_generated_selector(stored)
    assert stored is not None and stored.spec.selector is not None
    merged = admission.merge_apply(stored, desired, doc)
    assert admission.same_content(merged, stored)
    assert merged.spec.template.metadata.labels["batch.kubernetes.io/controller-uid"] == "u-1"
    # A manifest that does change the template is still applied, generated labels kept.
    doc2 = admission.parse_manifest(body.replace(b'["true"]', b'["false"]'))
    _, desired2 = admission.admit(doc2, "default")
    merged2 = admission.merge_apply(stored, desired2, doc2)
    assert merged2.spec.template.spec.containers[0].command == ["false"]
    assert merged2.spec.selector == stored.spec.selector
