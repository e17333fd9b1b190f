"""Projected volumes as Kubernetes documents them: validation naming the field, the files of
every source in one directory (Secrets, ConfigMaps, downward API with resourceFieldRef, a
service account token from the api), their update in place, the token's refresh at 80% of
its lifetime, and the tokens themselves (signed, with Kubernetes' claims)."""

from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import shutil
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Any

import jwt
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb import errors, satoken
from kyb.cli.streams import events_filter, read_events
from kyb.informer import Informer
from kyb.serve import run_services
from kyb.store import Store
from schemas.core import ConfigMap, Secret
from schemas.meta import ObjectMeta
from schemas.pod import (
    ConfigMapProjection,
    Container,
    DownwardAPIProjection,
    DownwardAPIVolumeFile,
    KeyToPath,
    ObjectFieldSelector,
    Pod,
    PodSpec,
    ProjectedVolumeSource,
    ResourceFieldSelector,
    ResourceRequirements,
    SecretProjection,
    ServiceAccountTokenProjection,
    Volume,
    VolumeMount,
    VolumeProjection,
)
from schemas.validation import SchemaError, decode
from services.kubelet.nodeclient import NodeApi, NodeTokens
from services.kubelet.tokens import IssuedToken, Tokens, needs_refresh
from services.kubelet.volumes import VolumeManager, VolumeNotReady, downward_payload
from tests.cluster import wait_api, wait_for
from tests.images import BUSYBOX_TAG, busybox_image  # noqa: F401  (fixture)

T0 = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)


# -- validation -------------------------------------------------------------------------------


def pod_manifest(*sources: dict[str, Any], default_mode: int | None = None) -> dict[str, Any]:
    projected: dict[str, Any] = {"sources": list(sources)}
    if default_mode is not None:
        projected["defaultMode"] = default_mode
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "busybox",
                                 "volumeMounts": [{"name": "all", "mountPath": "/projected"}]}],
                 "volumes": [{"name": "all", "projected": projected}]},
    }


def refusal(manifest: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SchemaError) as e:
        decode(manifest)
    return dict(e.value.details)


P = "spec.volumes[0].projected"


def test_a_projected_volume_of_every_source_is_accepted_and_defaulted():
    pod = decode(pod_manifest(
        {"secret": {"name": "db", "items": [{"key": "password", "path": "db/password", "mode": 0o400}]}},
        {"configMap": {"name": "settings", "optional": True}},
        {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                   {"path": "cpu", "resourceFieldRef": {"containerName": "app",
                                                                        "resource": "limits.cpu", "divisor": "1m"}}]}},
        {"serviceAccountToken": {"path": "token", "audience": "vault"}},
        {"clusterTrustBundle": {"signerName": "example.com/signer", "path": "ca.pem", "optional": True}},
        default_mode=0o440,
    ))
    assert isinstance(pod, Pod)
    volume = pod.spec.volumes[0]
    assert volume.emptyDir is None and volume.projected is not None
    token = volume.projected.sources[3].serviceAccountToken
    assert token is not None and token.expirationSeconds == 3600  # Kubernetes' default


@pytest.mark.parametrize(("sources", "field", "message"), [
    pytest.param([{"serviceAccountToken": {"path": "t", "expirationSeconds": 599}}],
                 f"{P}.sources[0].serviceAccountToken.expirationSeconds", "less than 10 minutes", id="short-token"),
    pytest.param([{"configMap": {"name": "a"}}, {"serviceAccountToken": {"path": "t", "expirationSeconds": 60}}],
                 f"{P}.sources[1].serviceAccountToken.expirationSeconds", "less than 10 minutes",
                 id="short-token-second-source"),
    pytest.param([{"configMap": {"name": "a"}, "secret": {"name": "b"}}], f"{P}.sources[0]",
                 "may not specify more than 1 volume type per source", id="two-types"),
    pytest.param([{}], f"{P}.sources[0]", "must specify one of", id="no-type"),
    pytest.param([{"secret": {"name": "s", "items": [{"key": "k", "path": "../etc/passwd"}]}}],
                 f"{P}.sources[0].secret.items[0].path", "must not contain '..'", id="backstep"),
    pytest.param([{"secret": {"name": "s", "items": [{"key": "k", "path": "/etc/passwd"}]}}],
                 f"{P}.sources[0].secret.items[0].path", "must be a relative path", id="absolute"),
    pytest.param([{"configMap": {"name": "s", "items": [{"key": "k", "path": "..data"}]}}],
                 f"{P}.sources[0].configMap.items[0].path", "must not start with '..'", id="reserved"),
    pytest.param([{"configMap": {"name": "a", "items": [{"key": "k", "path": "same"}]}},
                  {"downwardAPI": {"items": [{"path": "same", "fieldRef": {"fieldPath": "metadata.name"}}]}}],
                 P, "conflicting duplicate paths", id="same-path"),
    pytest.param([{"configMap": {"name": "a", "items": [{"key": "k", "path": "p", "mode": 0o1777}]}}],
                 f"{P}.sources[0].configMap.items[0].mode", "between 0 and 0777", id="mode"),
    pytest.param([{"secret": {"items": [{"key": "k", "path": "p"}]}}], f"{P}.sources[0].secret.name",
                 "Required value", id="no-name"),
    pytest.param([{"downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "spec.nodeName"}}]}}],
                 f"{P}.sources[0].downwardAPI.items[0].fieldRef.fieldPath", "Unsupported value", id="volume-field"),
    pytest.param([{"downwardAPI": {"items": [{"path": "c", "resourceFieldRef": {"resource": "limits.cpu"}}]}}],
                 f"{P}.sources[0].downwardAPI.items[0].resourceFieldRef.containerName", "Required value",
                 id="resource-container"),
    pytest.param([{"downwardAPI": {"items": [{"path": "c", "resourceFieldRef": {
        "containerName": "app", "resource": "limits.cpu", "divisor": "1Mi"}}]}}],
                 f"{P}.sources[0].downwardAPI.items[0].resourceFieldRef.divisor", "1m and 1", id="cpu-divisor"),
    pytest.param([{"clusterTrustBundle": {"name": "b", "path": "ca.pem"}}], f"{P}.sources[0].clusterTrustBundle",
                 "ClusterTrustBundles (certificates.k8s.io) are not served", id="trust-bundle-required"),
    pytest.param([{"clusterTrustBundle": {"path": "ca.pem", "optional": True}}], f"{P}.sources[0].clusterTrustBundle",
                 "either name or signerName", id="trust-bundle-unnamed"),
    pytest.param([{"serviceAccountToken": {"path": "t", "expirationSeconds": 700, "mystery": 1}}],
                 f"{P}.sources[0].serviceAccountToken.mystery", "unknown field", id="unknown-field"),
])
def test_invalid_projections_are_refused_naming_the_field(sources, field, message):
    details = refusal(pod_manifest(*sources))
    assert field in details, details
    assert message.lower() in details[field].lower(), details


def test_projected_default_mode_is_checked_and_other_file_volumes_too():
    assert f"{P}.defaultMode" in refusal(pod_manifest({"configMap": {"name": "a"}}, default_mode=0o1000))
    manifest = pod_manifest()
    manifest["spec"]["volumes"] = [{"name": "all", "configMap": {"name": "c", "items": [{"key": "k", "path": "/x"}]}}]
    assert "spec.volumes[0].configMap.items[0].path" in refusal(manifest)


# -- the downward API's resourceFieldRef --------------------------------------------------------


def pod_with(*volumes: Volume, resources: ResourceRequirements | None = None, labels=None,
             mounts: list[VolumeMount] | None = None) -> Pod:
    return Pod(
        metadata=ObjectMeta(name="app", namespace="default", uid=str(uuid.uuid4()), labels=labels or {}),
        spec=PodSpec(containers=[Container(name="app", resources=resources or ResourceRequirements(),
                                           volumeMounts=mounts or [])],
                     volumes=list(volumes), nodeName="n1"),
    )


def resource_item(path: str, resource: str, divisor: str | None = None) -> DownwardAPIVolumeFile:
    return DownwardAPIVolumeFile(path=path, resourceFieldRef=ResourceFieldSelector(
        containerName="app", resource=resource, divisor=divisor))


@pytest.mark.parametrize(("resources", "resource", "divisor", "expected"), [
    pytest.param({"limits": {"cpu": "500m"}}, "limits.cpu", "1m", "500", id="limit-millis"),
    pytest.param({"limits": {"cpu": "500m"}}, "limits.cpu", None, "1", id="limit-rounded-up"),
    pytest.param({}, "limits.cpu", None, "4", id="unset-limit-is-allocatable"),
    pytest.param({}, "limits.memory", "1Mi", "8192", id="unset-memory-limit-is-allocatable"),
    pytest.param({"requests": {"memory": "64Mi"}}, "requests.memory", "1Mi", "64", id="request"),
    pytest.param({"limits": {"memory": "1Gi"}}, "requests.memory", "1Mi", "1024", id="unset-request-is-limit"),
    pytest.param({}, "requests.cpu", "1m", "0", id="unset-request-is-zero"),
])
def test_resource_field_ref_as_kubernetes_computes_it(resources, resource, divisor, expected):
    pod = pod_with(resources=ResourceRequirements(**resources))
    payload = downward_payload(pod, [resource_item("v", resource, divisor)], None, {"cpu": "4", "memory": "8Gi"})
    assert payload == {"v": (expected.encode(), 0o644)}


# -- tokens: the refresh rule and the token itself --------------------------------------------


@given(lifetime=st.integers(600, 1 << 20), elapsed=st.floats(0, 2))
def test_a_token_is_refreshed_exactly_past_80_percent_of_its_lifetime(lifetime, elapsed):
    token = IssuedToken("t", T0, T0 + _dt.timedelta(seconds=lifetime))
    now = T0 + _dt.timedelta(seconds=lifetime * elapsed)
    assert needs_refresh(token, now) == (now >= T0 + _dt.timedelta(seconds=lifetime) * 0.8)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> _dt.datetime:
        return self.now


class SigningIssuer:
    """Issues real signed tokens with the same code the api uses; counts the requests."""

    def __init__(self, clock: Clock) -> None:
        self.key = satoken.load_key_pem(satoken.new_key_pem())
        self.clock = clock
        self.asked = 0
        self.failing = False

    async def token(self, pod: Pod, audience: str, expiration_seconds: int) -> IssuedToken:
        self.asked += 1
        if self.failing:
            raise errors.Temporary("api down")
        binding = satoken.Binding(namespace="default", service_account="default", pod=pod.metadata.name,
                                  pod_uid=pod.metadata.uid or "")
        token, expires = satoken.issue(self.key, binding, audiences=[audience] if audience else [],
                                       expiration_seconds=expiration_seconds, now=self.clock())
        return IssuedToken(token, self.clock(), expires)


async def test_tokens_are_kept_until_80_percent_then_replaced_and_kept_when_refresh_fails():
    clock = Clock()
    issuer = SigningIssuer(clock)
    tokens = Tokens(issuer, clock)
    pod = pod_with()
    first = await tokens.get(pod, "", 1000)
    clock.now = T0 + _dt.timedelta(seconds=799)
    assert await tokens.get(pod, "", 1000) == first and issuer.asked == 1
    clock.now = T0 + _dt.timedelta(seconds=800)
    second = await tokens.get(pod, "", 1000)
    assert second != first and issuer.asked == 2
    issuer.failing = True
    clock.now = T0 + _dt.timedelta(seconds=1700)  # past 80% of the second, still valid
    assert await tokens.get(pod, "", 1000) == second
    clock.now = T0 + _dt.timedelta(seconds=1800)  # the second has expired
    with pytest.raises(errors.Temporary):
        await tokens.get(pod, "", 1000)


def test_a_token_carries_kubernetes_claims_and_verifies_only_as_issued():
    key = satoken.load_key_pem(satoken.new_key_pem())
    binding = satoken.Binding(namespace="shop", service_account="builder", service_account_uid="sa-1",
                              pod="web-0", pod_uid="uid-1", node="n1")
    token, expires = satoken.issue(key, binding, audiences=[], expiration_seconds=3600, now=T0)
    assert expires == T0 + _dt.timedelta(hours=1)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == satoken.ISSUER and claims["aud"] == [satoken.ISSUER]
    assert claims["sub"] == "system:serviceaccount:shop:builder"
    assert claims["iat"] == claims["nbf"] == int(T0.timestamp()) and claims["exp"] == claims["iat"] + 3600
    assert claims["kubernetes.io"] == {"namespace": "shop", "serviceaccount": {"name": "builder", "uid": "sa-1"},
                                       "pod": {"name": "web-0", "uid": "uid-1"}, "node": {"name": "n1"}}
    assert jwt.get_unverified_header(token)["kid"] == satoken.key_id(key.public_key())
    public = key.public_key()
    assert satoken.verify(public, token, now=T0 + _dt.timedelta(minutes=59)) == binding
    for bad in (
        lambda: satoken.verify(public, token, now=T0 + _dt.timedelta(hours=1)),  # expired
        lambda: satoken.verify(public, token, now=T0 - _dt.timedelta(seconds=1)),  # not yet valid
        lambda: satoken.verify(satoken.load_key_pem(satoken.new_key_pem()).public_key(), token, now=T0),  # other key
        lambda: satoken.verify(public, token[:-4] + "AAAA", now=T0),  # tampered
        lambda: satoken.verify(public, satoken.issue(key, binding, audiences=["vault"], expiration_seconds=600,
                                                     now=T0)[0], now=T0),  # another audience
    ):
        with pytest.raises(satoken.TokenInvalid):
            bad()


# -- the volume manager on a real nats-server, tokens from the real api ------------------------


@pytest.fixture
def shm_dir():
    path = Path(tempfile.mkdtemp(prefix="kyb-test-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def api_with_key(nats_url, nc, tmp_path):
    key_file = tmp_path / "sa.key"
    key_file.write_bytes(satoken.new_key_pem())
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(["api"], nats_url, {"service_account_key_file": str(key_file),
                                                                  "configure_logging": False}, stop))
    await wait_api(nc, task)
    yield satoken.load_key(key_file)
    stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture
async def cluster(nc):
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    cms, secrets = Informer(nc, "ConfigMap"), Informer(nc, "Secret")
    for informer in (cms, secrets):
        await informer.start()
        await informer.wait_synced(5)
    yield store, cms, secrets
    for informer in (cms, secrets):
        await informer.stop()


def every_source(token_seconds: int = 3600) -> Volume:
    return Volume(name="all", projected=ProjectedVolumeSource(defaultMode=0o440, sources=[
        VolumeProjection(secret=SecretProjection(name="db", items=[KeyToPath(key="password", path="db/password",
                                                                             mode=0o400)])),
        VolumeProjection(configMap=ConfigMapProjection(name="settings")),
        VolumeProjection(configMap=ConfigMapProjection(name="absent", optional=True)),
        VolumeProjection(downwardAPI=DownwardAPIProjection(items=[
            DownwardAPIVolumeFile(path="labels", fieldRef=ObjectFieldSelector(fieldPath="metadata.labels")),
            DownwardAPIVolumeFile(path="cpu-limit", resourceFieldRef=ResourceFieldSelector(
                containerName="app", resource="limits.cpu", divisor="1m")),
        ])),
        VolumeProjection(serviceAccountToken=ServiceAccountTokenProjection(path="token",
                                                                           expirationSeconds=token_seconds)),
    ]))


async def test_every_source_lands_in_one_directory_and_follows_its_objects(nc, cluster, api_with_key, tmp_path,
                                                                           shm_dir):
    store, cms, secrets = cluster
    await store.create(ConfigMap(metadata=ObjectMeta(name="settings", namespace="default"), data={"mode": "blue"}))
    await store.create(Secret(metadata=ObjectMeta(name="db", namespace="default"),
                              data={"password": base64.b64encode(b"hunter2").decode()}))
    pod = await store.create(msgspec.structs.replace(pod_with(every_source(), labels={"app": "web"}),
                                                     metadata=ObjectMeta(name="app", namespace="default",
                                                                         labels={"app": "web"})))
    assert isinstance(pod, Pod)
    manager = VolumeManager(store, cms, secrets, tmp_path / "kubelet", shm_dir, resync_period=0.5,
                            allocatable={"cpu": "2", "memory": "4Gi"}, tokens=NodeTokens(NodeApi(nc, "n1")))
    try:
        root = Path((await manager.prepare(pod))["all"])
        assert root.is_relative_to(shm_dir), "a projected volume may hold secrets: tmpfs"
        assert (root / "db" / "password").read_text() == "hunter2"
        assert stat.S_IMODE((root / "db" / "password").stat().st_mode) == 0o400
        assert (root / "mode").read_text() == "blue"
        assert stat.S_IMODE((root / "mode").stat().st_mode) == 0o440
        assert (root / "labels").read_text() == 'app="web"'
        assert (root / "cpu-limit").read_text() == "2000"  # no limit: the node's allocatable
        binding = satoken.verify(api_with_key.public_key(), (root / "token").read_text(),
                                 now=_dt.datetime.now(_dt.UTC))
        assert (binding.namespace, binding.service_account, binding.pod, binding.pod_uid, binding.node) == (
            "default", "default", "app", pod.metadata.uid, "n1")

        await store.mutate("ConfigMap", "default", "settings",
                           lambda cm: msgspec.structs.replace(cm, data={"mode": "green"}))
        await wait_for(lambda: (root / "mode").read_text() == "green", what="the ConfigMap's new value")
        relabelled = msgspec.structs.replace(pod, metadata=msgspec.structs.replace(pod.metadata,
                                                                                   labels={"app": "shop"}))
        await manager.sync(relabelled)
        assert (root / "labels").read_text() == 'app="shop"'
        assert (root / "db" / "password").read_text() == "hunter2", "one payload: the other files stay"
    finally:
        await manager.close()
        await manager.cleanup(pod.metadata.uid or "")


async def test_a_missing_secret_holds_the_volume_and_a_missing_signing_key_is_a_warning(nc, cluster, nats_url,
                                                                                       tmp_path, shm_dir):
    store, cms, secrets = cluster
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(["api"], nats_url, {"configure_logging": False}, stop))  # no key
    try:
        await wait_api(nc, task)
        await store.create(ConfigMap(metadata=ObjectMeta(name="settings", namespace="default"), data={"a": "1"}))
        pod = await store.create(msgspec.structs.replace(pod_with(every_source()),
                                                         metadata=ObjectMeta(name="app", namespace="default")))
        manager = VolumeManager(store, cms, secrets, tmp_path / "kubelet", shm_dir,
                                tokens=NodeTokens(NodeApi(nc, "n1")))
        try:
            with pytest.raises(VolumeNotReady, match='secret "db" not found'):
                await manager.prepare(pod)
            await store.create(Secret(metadata=ObjectMeta(name="db", namespace="default"),
                                      data={"password": base64.b64encode(b"x").decode()}))
            root = Path((await manager.prepare(pod))["all"])
            assert (root / "a").read_text() == "1" and not (root / "token").exists()
            async def warning() -> dict[str, Any] | None:
                events = await read_events(nc, events_filter("default", "Pod", "app"))
                return next((e for e in events if e["reason"] == "TokenNotIssued"), None)

            event = await wait_for(warning, what="the Warning event")
            assert event["type"] == "Warning" and "service account key" in event["message"]
        finally:
            await manager.close()
            await manager.cleanup(pod.metadata.uid or "")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


# -- end to end: the kubelet (Docker and host processes) and the api ---------------------------


@pytest.fixture(params=[pytest.param("docker", id="docker"), pytest.param("process", id="process")])
async def kubelet_cluster(request, nats_url, tmp_path, monkeypatch):
    from tests.test_kubelet_lifecycle import cluster_for

    key_file = tmp_path / "sa.key"
    key_file.write_bytes(satoken.new_key_pem())
    monkeypatch.setenv("KYB_SERVICE_ACCOUNT_KEY_FILE", str(key_file))  # read by the api as it starts
    image = request.getfixturevalue("busybox_image") if request.param == "docker" else BUSYBOX_TAG
    async with cluster_for(request.param, nats_url, tmp_path, image) as c:
        yield c, satoken.load_key(key_file).public_key()


async def test_a_running_container_sees_every_source_and_their_updates(kubelet_cluster):
    c, public = kubelet_cluster
    await c.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                   "data": {"mode": "blue"}})
    await c.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                   "stringData": {"password": "hunter2"}})
    root = "/" if c.runtime == "docker" else ""
    files = ("mode", "db-password", "labels", "cpu", "token")
    copy = "; ".join(f"cat {root}projected/{f} > {root}data/{f}.tmp 2>/dev/null && mv {root}data/{f}.tmp "
                     f"{root}data/{f}" for f in files)
    volumes = [
        {"name": "data", "hostPath": {"path": str(c.data)}},
        {"name": "all", "projected": {"defaultMode": 0o444, "sources": [
            {"configMap": {"name": "settings"}},
            {"secret": {"name": "db", "items": [{"key": "password", "path": "db-password"}]}},
            {"downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu",
                                                     "divisor": "1m"}}]}},
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}},
        ]}},
    ]
    container = {"name": "app", "command": ["sh", "-c", f"while true; do {copy}; sleep 0.2; done"],
                 "resources": {"limits": {"cpu": "250m"}},
                 "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                  {"name": "all", "mountPath": "/projected"}]}
    manifest = c.pod_manifest("projected", [container], volumes=volumes)
    manifest["metadata"]["labels"] = {"app": "web"}
    await c.apply(manifest)
    pod = await c.wait_pod("projected", lambda p: p.status.phase == "Running")

    def seen(name: str) -> str:
        path = c.data / name
        return path.read_text() if path.exists() else ""

    await wait_for(lambda: seen("token"), what="the token inside the container")
    assert seen("mode") == "blue" and seen("db-password") == "hunter2" and seen("cpu") == "250"
    assert seen("labels") == 'app="web"'
    binding = satoken.verify(public, seen("token"), now=_dt.datetime.now(_dt.UTC))
    assert (binding.service_account, binding.pod, binding.pod_uid) == ("default", "projected", pod.metadata.uid)

    await c.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                   "data": {"mode": "green"}})
    await wait_for(lambda: seen("mode") == "green", what="the ConfigMap's change inside the container")
    manifest["metadata"]["labels"] = {"app": "shop"}
    await c.apply(manifest)
    await wait_for(lambda: seen("labels") == 'app="shop"', what="the new labels inside the container")
    assert seen("db-password") == "hunter2"


def test_a_node_gets_tokens_only_for_its_own_pods_and_their_own_account():
    from services.api.noderestriction import NodeRequest, token_binding

    pod = msgspec.structs.replace(pod_with(), spec=msgspec.structs.replace(pod_with().spec, serviceAccountName="builder"))
    req = NodeRequest(name="app", uid=pod.metadata.uid, expirationSeconds=600)
    binding = token_binding("n1", pod, req)
    assert (binding.service_account, binding.pod, binding.pod_uid, binding.node) == (
        "builder", "app", pod.metadata.uid, "n1")
    with pytest.raises(errors.Forbidden, match="bound to another node"):
        token_binding("n2", pod, req)
    with pytest.raises(errors.Conflict):
        token_binding("n1", pod, msgspec.structs.replace(req, uid="another"))
    with pytest.raises(errors.Invalid, match="10 minutes"):
        token_binding("n1", pod, msgspec.structs.replace(req, expirationSeconds=60))


def test_the_api_and_the_apiserver_making_the_key_at_once_get_the_same_one(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "apiserver" / "sa.key"
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: satoken.ensure_key(path), range(16)))
    assert len({satoken.key_id(k.public_key()) for k in keys}) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["sa.key"], "no file left aside"


@given(paths=st.lists(st.sampled_from(["a", "b", "c/d", "e"]), min_size=1, max_size=5))
def test_a_projection_is_refused_exactly_when_two_sources_write_one_path(paths):
    sources = [{"configMap": {"name": f"cm{i}", "items": [{"key": "k", "path": p}]}} for i, p in enumerate(paths)]
    duplicated = len(set(paths)) < len(paths)
    try:
        decode(pod_manifest(*sources))
    except SchemaError as e:
        details = dict(e.details)
        assert duplicated and list(details) == [P] and "conflicting duplicate paths" in details[P]
    else:
        assert not duplicated


async def test_every_namespace_publishes_the_clusters_ca_as_kube_root_ca_crt(nats_url, nc, tmp_path):
    import json

    from kyb import pki

    files = pki.ensure(tmp_path / "data", 0)
    store = Store(nc.jetstream())
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(["api"], nats_url, {"data_dir": str(tmp_path / "data"),
                                                                  "configure_logging": False}, stop))
    try:
        await wait_api(nc, task)
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
        reply = await nc.request("kyb.api.apply", json.dumps(manifest).encode(), timeout=10)
        assert reply.headers["Kyb-Status"] in ("200", "201"), reply.data
        for namespace in ("default", "kube-system", "team"):
            cm = await wait_for(lambda ns=namespace: store.get("ConfigMap", ns, "kube-root-ca.crt"),
                                what=f"kube-root-ca.crt in {namespace}")
            assert cm.data == {"ca.crt": files.ca_cert.read_text()}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
