"""Pod volumes: ConfigMap files change in place inside a running container, secrets live only
on tmpfs, a missing ConfigMap holds the pod back until it exists, hostPath type checks, items,
modes, subPath, emptyDir, downward API, and the atomic writer's invariants."""

from __future__ import annotations

import base64
import os
import random
import shutil
import stat
import tempfile
import uuid
from pathlib import Path

import docker
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kyb.informer import Informer
from kyb.store import Store
from schemas.core import ConfigMap, Secret
from schemas.meta import ObjectMeta
from schemas.pod import (
    ConfigMapVolumeSource,
    Container,
    DownwardAPIVolumeFile,
    DownwardAPIVolumeSource,
    EmptyDirVolumeSource,
    HostPathVolumeSource,
    KeyToPath,
    ObjectFieldSelector,
    Pod,
    PodSpec,
    SecretVolumeSource,
    Volume,
    VolumeMount,
)
from services.kubelet.runtime import LABEL_POD_UID, ContainerConfig, SandboxConfig
from services.kubelet.volumes import (
    VolumeManager,
    VolumeNotReady,
    VolumeSetupError,
    check_host_path,
    filesystem_type,
    read_payload,
    write_atomically,
)
from tests import images
from tests.cluster import wait_for as eventually

busybox_image = images.busybox_image


@pytest.fixture
def shm_dir():
    path = Path(tempfile.mkdtemp(prefix="kyb-test-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def cluster(nc):
    """A store and the two informers the manager reads, on a real nats-server."""
    store = Store(nc.jetstream())
    await store.ensure_buckets()
    cms, secrets = Informer(nc, "ConfigMap"), Informer(nc, "Secret")
    await cms.start()
    await secrets.start()
    await cms.wait_synced(5)
    await secrets.wait_synced(5)
    yield store, cms, secrets
    await cms.stop()
    await secrets.stop()


@pytest.fixture
async def manager(cluster, tmp_path, shm_dir):
    store, cms, secrets = cluster
    vm = VolumeManager(store, cms, secrets, tmp_path / "kubelet", shm_dir, resync_period=1.0)
    yield vm
    await vm.close()


def pod_with(*volumes: Volume, mounts: list[VolumeMount] | None = None, labels=None) -> Pod:
    return Pod(
        metadata=ObjectMeta(name="app", namespace="default", uid=str(uuid.uuid4()), labels=labels or {}),
        spec=PodSpec(
            containers=[Container(name="app", volumeMounts=mounts or [])],
            volumes=list(volumes),
            nodeName="n1",
        ),
    )


def config_map(name: str, **data: str) -> ConfigMap:
    return ConfigMap(metadata=ObjectMeta(name=name, namespace="default"), data=data)


def secret(name: str, **data: str) -> Secret:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return Secret(metadata=ObjectMeta(name=name, namespace="default"), data=encoded)


# -- the end-to-end behaviours ---------------------------------------------------------------


@pytest.mark.docker
async def test_configmap_change_is_seen_in_place_inside_the_container(
    cluster, manager, docker_engine, busybox_image
):
    from services.kubelet.runtime.docker import DockerRuntime

    store, _, _ = cluster
    await store.create(config_map("settings", **{"mode": "blue"}))
    mount = VolumeMount(name="cfg", mountPath="/etc/app")
    pod = pod_with(Volume(name="cfg", configMap=ConfigMapVolumeSource(name="settings")), mounts=[mount])
    prepared = await manager.prepare(pod)
    mounts = manager.mounts_for(pod, pod.spec.containers[0], prepared)
    assert mounts[0].container_path == "/etc/app" and mounts[0].read_only

    rt = DockerRuntime(docker.from_env())
    uid = pod.metadata.uid
    try:
        ip = f"127.79.{random.randint(1, 254)}.{random.randint(2, 254)}"
        sandbox = await rt.create_sandbox(
            SandboxConfig(pod_uid=uid, pod_name="app", namespace="default", pod_ip=ip, hostname="app")
        )
        info = await rt.create_and_start(
            sandbox,
            uid,
            ContainerConfig(
                name="app",
                image=busybox_image,
                image_pull_policy="Never",
                command=("/bin/sh", "-c", "sleep 600"),
                mounts=tuple(mounts),
            ),
        )

        async def read_in_container():
            code, out = await rt.exec(info.id, ["cat", "/etc/app/mode"], 5)
            return out.decode() if code == 0 else f"exit {code}: {out!r}"

        assert await read_in_container() == "blue"
        await store.mutate(
            "ConfigMap", "default", "settings", lambda cm: msgspec.structs.replace(cm, data={"mode": "green"})
        )
        assert await eventually(lambda: _is(read_in_container, "green")), "the same mount shows the new value"
        code, _ = await rt.exec(info.id, ["sh", "-c", "echo x > /etc/app/mode"], 5)
        assert code != 0, "configMap volumes are read-only inside the container"
    finally:
        for c in docker_engine.containers.list(all=True, filters={"label": f"{LABEL_POD_UID}={uid}"}):
            c.remove(force=True)
        await rt.close()


async def _is(fn, expected):
    return (await fn()) == expected


async def test_secret_files_live_only_on_tmpfs(cluster, manager, tmp_path, shm_dir):
    store, _, _ = cluster
    value = f"hunter2-{uuid.uuid4().hex}"
    await store.create(secret("db", password=value))
    pod = pod_with(
        Volume(name="creds", secret=SecretVolumeSource(secretName="db", defaultMode=0o400)),
        Volume(name="scratch", emptyDir=EmptyDirVolumeSource(medium="Memory")),
        Volume(name="disk", emptyDir=EmptyDirVolumeSource()),
    )
    prepared = await manager.prepare(pod)
    creds = Path(prepared["creds"])
    assert (creds / "password").read_text() == value
    assert stat.S_IMODE((creds / "password").stat().st_mode) == 0o400
    assert filesystem_type(creds) == "tmpfs" and filesystem_type(creds / "password") == "tmpfs"
    assert filesystem_type(Path(prepared["scratch"])) == "tmpfs"  # emptyDir medium Memory
    assert Path(prepared["disk"]).is_relative_to(tmp_path / "kubelet")
    for dirpath, _, files in os.walk(tmp_path):
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink():
                assert value.encode() not in path.read_bytes(), f"secret bytes found on disk in {path}"
    await manager.cleanup(pod.metadata.uid)
    assert not creds.exists() and not Path(prepared["disk"]).exists()


async def test_secret_dir_off_tmpfs_is_refused(cluster, tmp_path):
    store, cms, secrets = cluster
    with pytest.raises(ValueError, match="not on tmpfs"):
        VolumeManager(store, cms, secrets, tmp_path / "kubelet", tmp_path / "secrets")


async def test_missing_configmap_holds_the_pod_until_created(cluster, manager):
    store, _, _ = cluster
    pod = pod_with(Volume(name="cfg", configMap=ConfigMapVolumeSource(name="late")))
    with pytest.raises(VolumeNotReady, match='configmap "late" not found'):
        await manager.prepare(pod)
    await store.create(config_map("late", greeting="hi"))
    prepared = await manager.prepare(pod)
    assert (Path(prepared["cfg"]) / "greeting").read_text() == "hi"


async def test_items_modes_optional_and_missing_keys(cluster, manager):
    store, _, _ = cluster
    await store.create(config_map("app", **{"a.conf": "A", "b.conf": "B"}))
    pod = pod_with(
        Volume(
            name="picked",
            configMap=ConfigMapVolumeSource(
                name="app", defaultMode=0o600, items=[KeyToPath(key="a.conf", path="conf/a", mode=0o640)]
            ),
        ),
        Volume(name="maybe", configMap=ConfigMapVolumeSource(name="absent", optional=True)),
    )
    prepared = await manager.prepare(pod)
    picked = Path(prepared["picked"])
    assert (picked / "conf" / "a").read_text() == "A"
    assert stat.S_IMODE((picked / "conf" / "a").stat().st_mode) == 0o640
    assert sorted(p.name for p in picked.iterdir() if not p.name.startswith("..")) == ["conf"]
    assert [p for p in Path(prepared["maybe"]).iterdir() if not p.name.startswith("..")] == []
    bad = pod_with(
        Volume(name="x", configMap=ConfigMapVolumeSource(name="app", items=[KeyToPath(key="zz", path="z")]))
    )
    with pytest.raises(VolumeNotReady, match='non-existent key "zz"'):
        await manager.prepare(bad)


async def test_periodic_resync_updates_files_and_removes_dropped_keys(cluster, manager):
    store, _, _ = cluster
    await store.create(config_map("live", one="1", two="2"))
    pod = pod_with(Volume(name="cfg", configMap=ConfigMapVolumeSource(name="live")))
    target = Path((await manager.prepare(pod))["cfg"])
    await store.mutate(
        "ConfigMap", "default", "live", lambda cm: msgspec.structs.replace(cm, data={"one": "uno"})
    )

    async def updated():
        return (target / "one").read_text() == "uno" and not (target / "two").exists()

    assert await eventually(updated)


async def test_downward_api_and_subpath(manager, tmp_path):
    pod = pod_with(
        Volume(
            name="info",
            downwardAPI=DownwardAPIVolumeSource(
                items=[
                    DownwardAPIVolumeFile(
                        path="name", fieldRef=ObjectFieldSelector(fieldPath="metadata.name")
                    ),
                    DownwardAPIVolumeFile(
                        path="labels", fieldRef=ObjectFieldSelector(fieldPath="metadata.labels")
                    ),
                ]
            ),
        ),
        Volume(name="work", emptyDir=EmptyDirVolumeSource()),
        mounts=[
            VolumeMount(name="work", mountPath="/data", subPath="logs"),
            VolumeMount(name="info", mountPath="/info"),
        ],
        labels={"app": "web", "tier": "front"},
    )
    prepared = await manager.prepare(pod)
    assert (Path(prepared["info"]) / "name").read_text() == "app"
    assert (Path(prepared["info"]) / "labels").read_text() == 'app="web"\ntier="front"'
    mounts = manager.mounts_for(pod, pod.spec.containers[0], prepared)
    assert Path(mounts[0].host_path) == Path(prepared["work"]) / "logs" and Path(mounts[0].host_path).is_dir()
    assert not mounts[0].read_only and mounts[1].read_only
    escaping = pod_with(
        Volume(name="w", emptyDir=EmptyDirVolumeSource()),
        mounts=[VolumeMount(name="w", mountPath="/x", subPath="../..")],
    )
    with pytest.raises(VolumeSetupError):
        manager.mounts_for(escaping, escaping.spec.containers[0], await manager.prepare(escaping))


# -- hostPath ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "type_", "error"),
    [
        pytest.param("none", "DirectoryOrCreate", None, id="dir-or-create-creates"),
        pytest.param("file", "DirectoryOrCreate", "is not a directory", id="dir-or-create-on-file"),
        pytest.param("none", "Directory", "is not a directory", id="directory-missing"),
        pytest.param("dir", "Directory", None, id="directory-present"),
        pytest.param("none", "FileOrCreate", None, id="file-or-create-creates"),
        pytest.param("dir", "File", "is not a file", id="file-on-dir"),
        pytest.param("none", "File", "is not a file", id="file-missing"),
        pytest.param("none", "", None, id="unchecked"),
        pytest.param("file", "Socket", "is not a socket", id="socket-on-file"),
    ],
)
def test_host_path_type_checks(tmp_path, setup, type_, error):
    path = tmp_path / "target"
    if setup == "file":
        path.write_text("x")
    elif setup == "dir":
        path.mkdir()
    if error is None:
        check_host_path(str(path), type_)
        if type_ == "DirectoryOrCreate":
            assert path.is_dir()
        if type_ == "FileOrCreate":
            assert path.is_file()
    else:
        with pytest.raises(VolumeSetupError, match=error):
            check_host_path(str(path), type_)


async def test_host_path_volume_is_the_host_path(manager, tmp_path):
    pod = pod_with(
        Volume(
            name="h", hostPath=HostPathVolumeSource(path=str(tmp_path / "shared"), type="DirectoryOrCreate")
        )
    )
    prepared = await manager.prepare(pod)
    assert prepared["h"] == str(tmp_path / "shared") and (tmp_path / "shared").is_dir()
    await manager.cleanup(pod.metadata.uid)
    assert (tmp_path / "shared").is_dir(), "cleanup never touches hostPath contents"


# -- the atomic writer -------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c.conf", "dir/x", "dir/y", "deep/er/z"])
payloads = st.dictionaries(
    names, st.tuples(st.binary(max_size=20), st.sampled_from([0o400, 0o644, 0o600])), max_size=5
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(payloads, min_size=1, max_size=5))
def test_atomic_writer_shows_exactly_the_last_payload(tmp_path, sequence):
    target = tmp_path / uuid.uuid4().hex
    for payload in sequence:
        if any(a != b and b.startswith(a + "/") for a in payload for b in payload):
            continue  # a file cannot also be a directory
        write_atomically(target, payload)
        assert read_payload(target) == payload
        for rel, (content, _) in payload.items():
            assert (target / rel).read_bytes() == content  # through the visible symlinks
        visible = {p.name for p in target.iterdir() if not p.name.startswith("..")}
        assert visible == {rel.split("/")[0] for rel in payload}
        assert (
            len(
                [p for p in target.iterdir() if p.name.startswith("..") and p.is_dir() and not p.is_symlink()]
            )
            == 1
        )
        assert write_atomically(target, payload) is False  # unchanged content is not rewritten
