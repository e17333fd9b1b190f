"""Security on a real nats-server configured by kyb.auth: who may connect, who may write and
read what, the api's node-restricted verbs, and Secrets encrypted at rest."""

from __future__ import annotations

import asyncio
import base64
import json

import msgspec
import nats
import nats.errors
import pytest

from kyb import auth, errors, secretbox
from kyb.client import ApiClient, connect
from kyb.natsd import NatsServer, free_port
from kyb.serve import run_services
from kyb.store import Store
from schemas.coordination import Lease
from schemas.core import Node
from schemas.meta import ObjectMeta
from tests.cluster import wait_api
from tests.cluster import wait_for as eventually

NODES = ["n1", "n2"]
COMPONENTS = ["api", "scheduler", "deployment"]


@pytest.fixture
def secured(tmp_path):
    layout = auth.generate(tmp_path / "auth", COMPONENTS, nodes=NODES)
    server = NatsServer(
        store_dir=tmp_path / "js", port=free_port(), config_file=layout.server_config, log_file=tmp_path / "nats.log"
    )
    server.start()
    yield server, layout
    server.stop()


@pytest.fixture
async def cluster(secured, tmp_path):
    """The api running with its own credentials and a secret key, as `kyb up` runs it."""
    server, layout = secured
    key = secretbox.generate_key_file(tmp_path / "secret.key")
    auth.set_default(None)
    stop = asyncio.Event()
    opts = {"auth_dir": str(layout.dir), "secret_key_file": str(key), "configure_logging": False}
    task = asyncio.create_task(run_services(["api"], server.url, opts, stop))
    admin = await nats.connect(server.url, **auth.ClientAuth.from_creds(layout.creds["admin"]).nats_options())
    await wait_api(admin, task)
    yield server, layout, ApiClient(admin)
    stop.set()
    await asyncio.wait_for(task, 20)
    await admin.close()
    secretbox.configure(None)
    auth.set_default(None)


class Violations:
    """A client that remembers the permission violations the server reported to it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, e: Exception) -> None:
        self.seen.append(str(e))

    def has(self, subject_part: str) -> bool:
        return any("permissions violation" in s.lower() and subject_part.lower() in s.lower() for s in self.seen)


async def as_user(server: NatsServer, creds, violations: Violations | None = None):
    return await nats.connect(
        server.url, error_cb=(violations or Violations()).record, **auth.ClientAuth.from_creds(creds).nats_options()
    )


def pod(name: str, node: str, secrets: tuple[str, ...] = ()) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "env": [
                        {"name": f"S{i}", "valueFrom": {"secretKeyRef": {"name": s, "key": "password"}}}
                        for i, s in enumerate(secrets)
                    ],
                }
            ],
        },
    }


def secret(name: str, value: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"password": value}}


async def node_call(nc, node: str, verb: str, body: dict) -> tuple[int, dict]:
    msg = await nc.request(f"kyb.api.node.{node}.{verb}", json.dumps(body).encode(), timeout=10)
    return int(msg.headers["Kyb-Status"]), json.loads(msg.data)


# -- who may connect -------------------------------------------------------------------------


async def test_a_client_without_credentials_is_refused(secured):
    server, _ = secured
    auth.set_default(auth.ClientAuth())
    try:
        with pytest.raises(errors.Unreachable, match="(?i)authorization"):
            await connect(server.url)
    finally:
        auth.set_default(None)


async def test_a_wrong_password_is_refused_and_the_right_one_accepted(secured):
    server, layout = secured
    user, password = auth.read_creds(layout.creds["admin"])
    auth.set_default(auth.ClientAuth(user=user, password=password + "x"))
    try:
        with pytest.raises(errors.Unreachable):
            await connect(server.url)
        auth.set_default(auth.ClientAuth(user=user, password=password))
        nc = await connect(server.url)
        assert nc.is_connected
        await nc.close()
    finally:
        auth.set_default(None)


def test_credentials_files_are_private_and_kept_across_runs(tmp_path):
    first = auth.generate(tmp_path / "auth", COMPONENTS, nodes=NODES)
    second = auth.generate(tmp_path / "auth", COMPONENTS, nodes=NODES)
    for path in [*first.creds.values(), first.server_config]:
        assert path.stat().st_mode & 0o077 == 0, path
    assert auth.read_creds(first.creds["admin"]) == auth.read_creds(second.creds["admin"])
    assert set(first.creds) >= {"admin", "api", "scheduler", "kubelet-n1", "kubelet-n2"}


# -- the admin user --------------------------------------------------------------------------


async def test_the_cli_user_applies_and_reads_through_the_api_but_cannot_write_the_buckets(cluster):
    server, layout, api = cluster
    obj, result = await api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}})
    assert result == "created"
    assert (await api.get("ConfigMap", "default", "cm"))["data"] == {"a": "1"}
    # reads straight from the bucket (what `get -w` and describe do) are allowed
    store = Store(api.nc.jetstream(timeout=2))
    assert (await store.get("ConfigMap", "default", "cm")).data == {"a": "1"}
    # ... writes are not: objects come in only through the api
    seen = Violations()
    nc = await as_user(server, layout.creds["admin"], seen)
    try:
        with pytest.raises((errors.Temporary, errors.Permanent)):
            await Store(nc.jetstream(timeout=1)).create(
                msgspec.convert({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "direct"}}, type=type(
                    await store.get("ConfigMap", "default", "cm")))
            )
        await eventually(lambda: asyncio.sleep(0, seen.has("$KV.kyb-configmaps")))
    finally:
        await nc.close()
    with pytest.raises(errors.NotFound):
        await api.get("ConfigMap", "default", "direct")


# -- kubelets --------------------------------------------------------------------------------


async def test_a_kubelet_writes_its_own_node_and_lease_but_not_another_nodes(cluster):
    server, layout, _ = cluster
    seen = Violations()
    nc = await as_user(server, layout.creds["kubelet-n1"], seen)
    try:
        store = Store(nc.jetstream(timeout=1))
        mine = await store.create(Node(metadata=ObjectMeta(name="n1")))
        assert mine.metadata.resourceVersion
        lease = await store.create(Lease(metadata=ObjectMeta(name="n1", namespace="kube-node-lease")))
        assert lease.metadata.resourceVersion
        with pytest.raises(errors.Temporary):
            await store.create(Node(metadata=ObjectMeta(name="n2")))
        with pytest.raises(errors.Temporary):
            await store.create(Lease(metadata=ObjectMeta(name="n2", namespace="kube-node-lease")))
        await eventually(lambda: asyncio.sleep(0, seen.has("$KV.kyb-nodes._.n2")))
        await eventually(lambda: asyncio.sleep(0, seen.has("$KV.kyb-leases.kube-node-lease.n2")))
    finally:
        await nc.close()
    admin_store = Store(cluster[2].nc.jetstream())
    with pytest.raises(errors.NotFound):
        await admin_store.get("Node", None, "n2")


async def test_a_kubelet_changes_only_the_status_of_pods_bound_to_its_node(cluster):
    server, layout, api = cluster
    mine, _ = await api.apply(pod("mine", "n1"))
    theirs, _ = await api.apply(pod("theirs", "n2"))
    seen = Violations()
    nc = await as_user(server, layout.creds["kubelet-n1"], seen)
    try:
        running = {"phase": "Running", "podIP": "127.1.0.5"}
        code, body = await node_call(nc, "n1", "status", {"name": "mine", "uid": mine["metadata"]["uid"], "status": running})
        assert code == 200, body
        assert body["status"]["phase"] == "Running"
        code, body = await node_call(nc, "n1", "status", {"name": "theirs", "status": running})
        assert code == 403, body
        assert "another node" in body["message"]
        # asking on behalf of another node is not even allowed on the bus
        with pytest.raises(nats.errors.NoRespondersError if False else (nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.request("kyb.api.node.n2.status", json.dumps({"name": "theirs", "status": running}).encode(), timeout=1)
        # and the pods bucket is out of reach
        store = Store(nc.jetstream(timeout=1))
        current = await store.get("Pod", "default", "theirs")  # reading is fine
        with pytest.raises(errors.Temporary):
            await store.update(msgspec.structs.replace(current, status=msgspec.structs.replace(current.status, phase="Failed")))
        await eventually(lambda: asyncio.sleep(0, seen.has("$KV.kyb-pods.default.theirs")))
    finally:
        await nc.close()
    assert (await api.get("Pod", "default", "theirs"))["status"].get("phase") == "Pending"
    assert (await api.get("Pod", "default", "mine"))["status"]["phase"] == "Running"


async def test_a_kubelet_deletes_only_its_own_terminating_pods(cluster):
    server, layout, api = cluster
    await api.apply(pod("a", "n1"))
    await api.apply(pod("b", "n2"))
    await api.delete("Pod", "default", "a")
    await api.delete("Pod", "default", "b")
    nc = await as_user(server, layout.creds["kubelet-n1"])
    try:
        code, body = await node_call(nc, "n1", "delete", {"name": "b"})
        assert code == 403, body
        code, body = await node_call(nc, "n1", "delete", {"name": "a"})
        assert code == 200, body
    finally:
        await nc.close()
    with pytest.raises(errors.NotFound):
        await api.get("Pod", "default", "a")
    assert (await api.get("Pod", "default", "b"))["metadata"]["deletionTimestamp"]


async def test_a_kubelet_reads_only_the_secrets_its_pods_use(cluster):
    server, layout, api = cluster
    await api.apply(secret("used", "hunter2"))
    await api.apply(secret("other", "swordfish"))
    await api.apply(pod("app", "n1", secrets=("used",)))
    await api.apply(pod("elsewhere", "n2", secrets=("other",)))
    seen = Violations()
    nc = await as_user(server, layout.creds["kubelet-n1"], seen)
    try:
        code, body = await node_call(nc, "n1", "secret", {"name": "used"})
        assert code == 200, body
        assert base64.b64decode(body["data"]["password"]) == b"hunter2"
        code, body = await node_call(nc, "n1", "secret", {"name": "other"})
        assert code == 403, body
        assert "swordfish" not in json.dumps(body)
        # no way around it through the bucket
        with pytest.raises(errors.KybError):
            await Store(nc.jetstream(timeout=1)).get("Secret", "default", "other")
        await eventually(lambda: asyncio.sleep(0, seen.has("KV_kyb-secrets")))
    finally:
        await nc.close()


# -- controllers ------------------------------------------------------------------------------


async def test_a_controller_writes_its_own_buckets_only(cluster):
    server, layout, api = cluster
    await api.apply(pod("p", ""))
    seen = Violations()
    nc = await as_user(server, layout.creds["scheduler"], seen)
    try:
        store = Store(nc.jetstream(timeout=1))
        bound = await store.mutate(
            "Pod", "default", "p", lambda p: msgspec.structs.replace(p, spec=msgspec.structs.replace(p.spec, nodeName="n1"))
        )
        assert bound.spec.nodeName == "n1"
        with pytest.raises(errors.Temporary):
            await store.create(Node(metadata=ObjectMeta(name="rogue")))
        await eventually(lambda: asyncio.sleep(0, seen.has("$KV.kyb-nodes._.rogue")))
        with pytest.raises(errors.KybError):
            await store.get("Secret", "default", "anything")
    finally:
        await nc.close()
    assert (await api.get("Pod", "default", "p"))["spec"]["nodeName"] == "n1"


# -- Secrets at rest ------------------------------------------------------------------------------


async def test_the_raw_bucket_bytes_of_a_secret_hold_no_plaintext(cluster):
    server, layout, api = cluster
    value = "correct horse battery staple"
    stored, _ = await api.apply(secret("db", value))
    assert base64.b64decode(stored["data"]["password"]).decode() == value  # the api shows it decrypted
    raw_nc = await as_user(server, layout.creds["system"])
    try:
        msg = await raw_nc.jetstream().get_msg("KV_kyb-secrets", subject="$KV.kyb-secrets.default.db")
    finally:
        await raw_nc.close()
    encoded = base64.b64encode(value.encode())
    assert value.encode() not in msg.data
    assert encoded not in msg.data
    assert b"enc:v1:" in msg.data
    assert b"stringData\":{}" in msg.data or b"stringData" not in msg.data
    # readers with the key see the value: the api reads it back decrypted
    got = await api.get("Secret", "default", "db")
    assert base64.b64decode(got["data"]["password"]).decode() == value
