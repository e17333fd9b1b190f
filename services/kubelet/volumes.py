"""Pod volumes on this node: make each volume of a pod exist as a host directory (or file)
before its containers start, project ConfigMap, Secret, downward API and service account
token contents into it, keep those projections current while the pod runs, and remove it all
with the pod.

Layout (``kind`` is empty-dir, configmap, secret, downward-api, projected):

    <base_dir>/pods/<uid>/volumes/<kind>/<name>      emptyDir, configMap, downwardAPI
    <secret_dir>/pods/<uid>/volumes/<kind>/<name>    secret, projected, emptyDir with medium Memory

A projected volume is one directory holding the files of all its sources (Secrets,
ConfigMaps, downward API items, a service account token, an optional ClusterTrustBundle's
empty file), written as one payload, so one rename switches them all.

``secret_dir`` must be on tmpfs (default ``/dev/shm/kybernetes``): secret bytes never reach
the node's disk. Projected volumes are written the way Kubernetes' AtomicWriter does: the
files go into a fresh timestamped directory ``..<ts>``, a ``..data`` symlink to it is
renamed over the old one in one step, and the entries a container sees are symlinks through
``..data``. Containers bind-mount the volume directory, so an update appears in place,
atomically, with no remount. Updates come from ``sync(pod)`` (the kubelet calls it on
ConfigMap/Secret changes), from this manager's own informer handlers, and from a periodic
resync every ``resync_period`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import structlog

from kyb import errors
from kyb.informer import Informer
from kyb.store import Store
from schemas.core import ConfigMap, Secret
from schemas.helpers import volume_references
from schemas.meta import Object
from schemas.pod import Container, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Volume
from services.kubelet.env import ConfigError, field_value, resource_value
from services.kubelet.runtime.base import Mount
from services.kubelet.tokens import TokenIssuer, TokenNotIssued, Tokens

log = structlog.get_logger("kyb.kubelet.volumes")

DEFAULT_MODE = 0o644
DATA_DIR = "..data"
DEFAULT_SECRET_DIR = Path("/dev/shm/kybernetes")

Payload = dict[str, tuple[bytes, int]]  # relative path -> (content, mode)


class VolumeNotReady(errors.NotFound):
    """A volume's source (ConfigMap, Secret, key, claim) does not exist yet; retry later."""


class VolumeSetupError(errors.Temporary):
    """A volume could not be set up (hostPath type check, unsafe path); retry later."""


# -- filesystem facts ---------------------------------------------------------------------------


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (or its nearest existing parent), from /proc/mounts."""
    p = path.resolve()
    while not p.exists():
        p = p.parent
    best, fstype = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1].replace("\\040", " ")
            inside = str(p) == mnt or str(p).startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    return fstype


def _safe_relative(path: str, what: str) -> str:
    """A relative path that stays inside its volume ('..' and absolute paths are refused)."""
    parts = Path(path).parts
    if not path or Path(path).is_absolute() or ".." in parts or any(p.startswith("..") for p in parts):
        raise VolumeSetupError(f"{what} {path!r} must be a relative path without '..'")
    return path


# -- the atomic writer --------------------------------------------------------------------------


def read_payload(target: Path) -> Payload | None:
    """What ``..data`` currently holds, or None before the first write."""
    data = target / DATA_DIR
    if not data.is_symlink():
        return None
    root = data.resolve()
    found: Payload = {}
    for dirpath, _, files in os.walk(root):
        for fname in files:
            full = Path(dirpath) / fname
            found[str(full.relative_to(root))] = (full.read_bytes(), stat.S_IMODE(full.stat().st_mode))
    return found


def write_atomically(target: Path, payload: Payload) -> bool:
    """Make ``target`` show exactly ``payload``, switching in one rename. True when it changed."""
    target.mkdir(parents=True, exist_ok=True)
    if read_payload(target) == payload:
        return False
    old = (target / DATA_DIR).resolve() if (target / DATA_DIR).is_symlink() else None
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
    ts_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
    ts_dir.chmod(0o755)
    for rel, (content, mode) in payload.items():
        path = ts_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    tmp_link = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(ts_dir.name)
    os.rename(tmp_link, target / DATA_DIR)
    visible = {Path(rel).parts[0] for rel in payload}
    for top in visible:
        link = target / top
        if not link.is_symlink():
            link.symlink_to(f"{DATA_DIR}/{top}")
    for entry in target.iterdir():
        if not entry.name.startswith("..") and entry.name not in visible and entry.is_symlink():
            entry.unlink()
    if old is not None and old.parent == target and old != ts_dir:
        shutil.rmtree(old, ignore_errors=True)
    return True


# -- what a volume holds ------------------------------------------------------------------------


def _project(
    data: dict[str, bytes], items: list[KeyToPath], default_mode: int | None, source: str, optional: bool = False
) -> Payload:
    mode = DEFAULT_MODE if default_mode is None else default_mode
    if not items:
        return {_safe_relative(k, "key"): (v, mode) for k, v in data.items()}
    out: Payload = {}
    for item in items:
        if item.key not in data:
            if optional:  # an optional source's missing key is no file, as in Kubernetes
                continue
            raise VolumeNotReady(f'{source} references non-existent key "{item.key}"')
        out[_safe_relative(item.path, "items path")] = (
            data[item.key],
            mode if item.mode is None else item.mode,
        )
    return out


def configmap_bytes(cm: ConfigMap) -> dict[str, bytes]:
    data = {k: v.encode() for k, v in cm.data.items()}
    data.update({k: base64.b64decode(v) for k, v in cm.binaryData.items()})
    return data


def secret_bytes(secret: Secret) -> dict[str, bytes]:
    data = {k: base64.b64decode(v) for k, v in secret.data.items()}
    data.update({k: v.encode() for k, v in secret.stringData.items()})
    return data


def downward_payload(
    pod: Pod, items: list[DownwardAPIVolumeFile], default_mode: int | None, allocatable: Mapping[str, str]
) -> Payload:
    """The files of downward API items: pod fields (``fieldRef``) and a container's requests
    and limits (``resourceFieldRef``; an unset limit is the node's ``allocatable``)."""
    mode = DEFAULT_MODE if default_mode is None else default_mode
    containers = {c.name: c for c in [*pod.spec.initContainers, *pod.spec.containers]}
    out: Payload = {}
    for item in items:
        try:
            if item.fieldRef is not None:
                value = field_value(pod, item.fieldRef.fieldPath)
            elif item.resourceFieldRef is not None:
                ref = item.resourceFieldRef
                container = containers.get(ref.containerName)
                if container is None:
                    raise VolumeSetupError(f'downwardAPI item {item.path!r}: no container "{ref.containerName}"')
                value = resource_value(pod, container, ref.resource, ref.divisor, allocatable)
            else:
                continue
        except ConfigError as e:
            raise VolumeSetupError(f"downwardAPI item {item.path!r}: {e}") from None
        out[_safe_relative(item.path, "items path")] = (value.encode(), mode if item.mode is None else item.mode)
    return out


def check_host_path(path: str, type_: str) -> None:
    """hostPath ``type`` checks as the kubelet makes them (creating where the type says so)."""
    p = Path(path)
    if type_ == "DirectoryOrCreate":
        if not p.exists():
            p.mkdir(mode=0o755, parents=True)
        if not p.is_dir():
            raise VolumeSetupError(f"hostPath type check failed: {path} is not a directory")
    elif type_ == "Directory":
        if not p.is_dir():
            raise VolumeSetupError(f"hostPath type check failed: {path} is not a directory")
    elif type_ == "FileOrCreate":
        if not p.exists():
            if not p.parent.is_dir():  # Kubernetes does not create the parent either
                raise VolumeSetupError(f"hostPath type check failed: {p.parent} is not a directory")
            p.touch(mode=0o644)
        if not p.is_file():
            raise VolumeSetupError(f"hostPath type check failed: {path} is not a file")
    elif type_ == "File":
        if not p.is_file():
            raise VolumeSetupError(f"hostPath type check failed: {path} is not a file")
    elif type_ in ("Socket", "CharDevice", "BlockDevice"):
        test = {"Socket": stat.S_ISSOCK, "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK}[type_]
        try:
            ok = test(p.stat().st_mode)
        except FileNotFoundError:
            ok = False
        if not ok:
            raise VolumeSetupError(f"hostPath type check failed: {path} is not a {type_.lower()}")


# -- the manager ------------------------------------------------------------------------------


class VolumeManager:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        configmaps: Informer,
        secrets: Informer,
        base_dir: Path,
        secret_dir: Path = DEFAULT_SECRET_DIR,
        *,
        resync_period: float = 3.0,  # seconds between two refreshes of every projected volume
        allocatable: Mapping[str, str] | None = None,  # the node's, for resourceFieldRef of unset limits
        tokens: TokenIssuer | None = None,  # who issues service account tokens; None: none are
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if filesystem_type(secret_dir) != "tmpfs":
            raise ValueError(
                f"secret_dir {secret_dir} is not on tmpfs; secrets must never reach the node's disk"
            )
        self.store = store
        self.configmaps = configmaps
        self.secrets = secrets
        self.base_dir = Path(base_dir)
        self.secret_dir = Path(secret_dir)
        self.resync_period = resync_period
        self.allocatable = dict(allocatable or {})
        self.tokens = Tokens(tokens, clock)
        self._warned: set[tuple[str, str]] = set()  # (pod uid, reason) of the Warning events recorded
        self._pods: dict[str, Pod] = {}  # uid -> the pod as last prepared or synced
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        configmaps.add_handler(self._on_source_change)
        secrets.add_handler(self._on_source_change)

    # -- paths --------------------------------------------------------------------------

    def _dir(self, uid: str, kind: str, name: str, *, tmpfs: bool) -> Path:
        root = self.secret_dir if tmpfs else self.base_dir
        return root / "pods" / uid / "volumes" / kind / name

    # -- the kubelet's side ---------------------------------------------------------------

    async def prepare(self, pod: Pod) -> dict[str, str]:
        """Set up every volume of ``pod``; returns volume name -> host path.

        Raises VolumeNotReady (a missing ConfigMap/Secret/key) or VolumeSetupError."""
        uid = _uid(pod)
        prepared: dict[str, str] = {}
        for volume in pod.spec.volumes:
            prepared[volume.name] = await self._setup(pod, uid, volume)
        self._pods[uid] = pod
        self._ensure_resync()
        return prepared

    def mounts_for(self, pod: Pod, container: Container, prepared: dict[str, str]) -> list[Mount]:
        """The container's volumeMounts as runtime mounts (subPath, readOnly)."""
        by_name = {v.name: v for v in pod.spec.volumes}
        mounts: list[Mount] = []
        for vm in container.volumeMounts:
            volume = by_name.get(vm.name)
            if vm.name not in prepared or volume is None:
                raise errors.Invalid(
                    f'container "{container.name}" mounts volume "{vm.name}" that the pod does not declare',
                    [errors.FieldError("spec.containers[].volumeMounts[].name", f"Not found: {vm.name!r}")],
                )
            host = Path(prepared[vm.name])
            if vm.subPath:
                host = self._sub_path(host, _safe_relative(vm.subPath, "subPath"))
            mounts.append(
                Mount(host_path=str(host), container_path=vm.mountPath, read_only=vm.readOnly or _projects(volume))
            )
        return mounts

    async def sync(self, pod: Pod) -> None:
        """Refresh the projected files of a prepared pod (ConfigMap/Secret/labels changed)."""
        uid = _uid(pod)
        if uid not in self._pods:
            return
        self._pods[uid] = pod
        for volume in pod.spec.volumes:
            if _projects(volume):
                try:
                    await self._setup(pod, uid, volume)
                except errors.KybError as e:  # keep the last good contents, as the kubelet does
                    log.info("volume not refreshed", pod=pod.metadata.name, volume=volume.name, why=str(e))

    async def cleanup(self, pod_uid: str) -> None:
        """Remove every volume directory of a pod (hostPath contents are never touched)."""
        self._pods.pop(pod_uid, None)
        self._dirty.discard(pod_uid)
        self.tokens.forget(pod_uid)
        self._warned = {w for w in self._warned if w[0] != pod_uid}
        for root in (self.base_dir, self.secret_dir):
            pod_dir = root / "pods" / pod_uid
            await asyncio.to_thread(shutil.rmtree, pod_dir, True)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- volume kinds ---------------------------------------------------------------------

    async def _setup(self, pod: Pod, uid: str, volume: Volume) -> str:
        if volume.hostPath is not None:
            await asyncio.to_thread(check_host_path, volume.hostPath.path, volume.hostPath.type)
            return volume.hostPath.path
        if volume.configMap is not None:
            cm = volume.configMap
            payload = await self._projected(pod, "ConfigMap", cm.name, cm.optional, cm.items, cm.defaultMode)
            return await self._write(self._dir(uid, "configmap", volume.name, tmpfs=False), payload)
        if volume.secret is not None:
            sv = volume.secret
            payload = await self._projected(pod, "Secret", sv.secretName, sv.optional, sv.items, sv.defaultMode)
            return await self._write(self._dir(uid, "secret", volume.name, tmpfs=True), payload)
        if volume.downwardAPI is not None:
            src = volume.downwardAPI
            payload = downward_payload(pod, src.items, src.defaultMode, self.allocatable)
            return await self._write(self._dir(uid, "downward-api", volume.name, tmpfs=False), payload)
        if volume.projected is not None:
            payload = await self._projected_volume(pod, volume.projected)
            return await self._write(self._dir(uid, "projected", volume.name, tmpfs=True), payload)
        if volume.persistentVolumeClaim is not None:
            return await self._claim_path(pod, volume.persistentVolumeClaim.claimName)
        memory = volume.emptyDir is not None and volume.emptyDir.medium == "Memory"
        path = self._dir(uid, "empty-dir", volume.name, tmpfs=memory)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # any user in the container may write, as with Kubernetes' emptyDir
        return str(path)

    async def _projected(self, pod: Pod, kind: str, name: str, optional: bool | None,
                         items: list[KeyToPath], default_mode: int | None) -> Payload:
        """The files of a configMap or secret volume (``kind`` ConfigMap or Secret) named ``name``:
        VolumeNotReady while a source that is not ``optional`` is missing, no files if it is."""
        what = f'{kind.lower()} "{name}"'
        informer = self.configmaps if kind == "ConfigMap" else self.secrets
        obj = await self._source(informer, kind, pod, name)
        if obj is None and not optional:
            raise VolumeNotReady(f"{what} not found")
        if kind == "ConfigMap":
            data = configmap_bytes(obj) if isinstance(obj, ConfigMap) else {}
        else:
            data = secret_bytes(obj) if isinstance(obj, Secret) else {}
        return _project(data, items if obj is not None else [], default_mode, what, bool(optional))

    async def _projected_volume(self, pod: Pod, src: ProjectedVolumeSource) -> Payload:
        """The files of every source of a projected volume, in one payload (a later source's
        file wins a path that validation could not see twice: a whole ConfigMap's keys)."""
        mode = DEFAULT_MODE if src.defaultMode is None else src.defaultMode
        payload: Payload = {}
        for s in src.sources:
            if s.secret is not None:
                sp = s.secret
                payload.update(await self._projected(pod, "Secret", sp.name, sp.optional, sp.items, src.defaultMode))
            elif s.configMap is not None:
                cp = s.configMap
                payload.update(await self._projected(pod, "ConfigMap", cp.name, cp.optional, cp.items, src.defaultMode))
            elif s.downwardAPI is not None:
                payload.update(downward_payload(pod, s.downwardAPI.items, src.defaultMode, self.allocatable))
            elif s.serviceAccountToken is not None:
                t = s.serviceAccountToken
                try:
                    token = await self.tokens.get(pod, t.audience, t.expirationSeconds)
                except TokenNotIssued as e:
                    await self._warn_once(pod, "TokenNotIssued", f"service account token {t.path!r} not written: {e}")
                    continue
                payload[_safe_relative(t.path, "serviceAccountToken path")] = (token.encode(), mode)
            elif s.clusterTrustBundle is not None:  # validation admits only optional ones
                b = s.clusterTrustBundle
                payload[_safe_relative(b.path, "clusterTrustBundle path")] = (b"", mode)
                await self._warn_once(pod, "ClusterTrustBundleNotServed",
                                      f"clusterTrustBundle {b.path!r} is an empty file: ClusterTrustBundles "
                                      "(certificates.k8s.io) are not served")
        return payload

    async def _warn_once(self, pod: Pod, reason: str, message: str) -> None:
        key = (_uid(pod), reason)
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning("volume source not effective", pod=pod.metadata.name, reason=reason, message=message)
        with contextlib.suppress(errors.KybError):
            await self.store.record_event(pod, reason, message, "Warning", "kubelet")

    async def _source(self, informer: Informer, kind: str, pod: Pod, name: str) -> Object | None:
        """The named ConfigMap/Secret from the watch cache, else straight from the store."""
        namespace = pod.metadata.namespace or "default"
        obj = informer.get_by_name(namespace, name)
        if obj is not None:
            return obj
        try:
            return await self.store.get(kind, namespace, name)
        except errors.NotFound:
            return None

    async def _claim_path(self, pod: Pod, claim_name: str) -> str:
        namespace = pod.metadata.namespace or "default"
        try:
            claim = await self.store.get("PersistentVolumeClaim", namespace, claim_name)
        except errors.NotFound:
            raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" not found') from None
        volume_name = claim.spec.volumeName  # type: ignore[attr-defined]
        if not volume_name:
            raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" is not bound')
        try:
            pv = await self.store.get("PersistentVolume", None, volume_name)
        except errors.NotFound:
            raise VolumeNotReady(f'persistentvolume "{volume_name}" not found') from None
        spec = pv.spec  # type: ignore[attr-defined]
        source = getattr(spec, "hostPath", None) or getattr(spec, "local", None)
        if source is None:
            raise VolumeSetupError(f'persistentvolume "{volume_name}" has no hostPath or local source')
        await asyncio.to_thread(check_host_path, source.path, "DirectoryOrCreate")
        return str(source.path)

    @staticmethod
    async def _write(target: Path, payload: Payload) -> str:
        changed = await asyncio.to_thread(write_atomically, target, payload)
        if changed:
            log.debug("volume contents updated", path=str(target), files=len(payload))
        return str(target)

    @staticmethod
    def _sub_path(volume_dir: Path, sub: str) -> Path:
        host = volume_dir / sub
        if not host.exists() and not host.is_symlink():
            host.mkdir(parents=True, exist_ok=True)  # Kubernetes creates a missing subPath directory
        resolved = host.resolve()
        if not (resolved == volume_dir.resolve() or volume_dir.resolve() in resolved.parents):
            raise VolumeSetupError(f"subPath {sub!r} points outside its volume")
        return resolved

    # -- keeping projections current ------------------------------------------------------

    def _on_source_change(
        self, event: str, new: Object | None, old: Object | None, headers: dict[str, str]
    ) -> None:
        obj = new or old
        if obj is None:
            return
        namespace, name = obj.metadata.namespace or "default", obj.metadata.name
        for uid, pod in self._pods.items():
            if (pod.metadata.namespace or "default") == namespace and _references(pod, obj.kind, name):
                self._dirty.add(uid)
        if self._dirty:
            self._wake.set()

    def _ensure_resync(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._resync_loop(), name="volume-resync")

    async def _resync_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.resync_period)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            everyone = not dirty
            for uid, pod in list(self._pods.items()):
                if everyone or uid in dirty:
                    try:
                        await self.sync(pod)
                    except Exception:
                        log.exception("volume resync failed", pod=pod.metadata.name)


def _references(pod: Pod, kind: str, name: str) -> bool:
    cms, secrets = volume_references(pod)
    return name in (cms if kind == "ConfigMap" else secrets)


def _projects(volume: Volume) -> bool:
    """A volume whose files the kubelet writes (read-only in the container, kept current)."""
    return any(s is not None for s in (volume.configMap, volume.secret, volume.downwardAPI, volume.projected))


def _uid(pod: Pod) -> str:
    uid = pod.metadata.uid
    if not uid:
        raise errors.Invalid("pod has no uid", [errors.FieldError("metadata.uid", "Required value")])
    return uid
