"""Who may say what on the bus: per-component NATS users, their subject permissions, and the
server configuration that enforces them.

NATS authorizes per subject, so every right here is a list of subjects. A KV write is a
publish to ``$KV.<bucket>.<key>``; a KV read is a JetStream API request about the bucket's
stream (``$JS.API.DIRECT.GET.KV_<bucket>``, ``$JS.API.CONSUMER.CREATE.KV_<bucket>``, ...).
Replies go to the caller's inbox. A component's inbox prefix is its own (``_REPLY.<user>``,
which kyb sets), so no other user can listen to its answers. A client user (``admin``) keeps
NATS' default inbox prefix ``_INBOX``, so any NATS client (nats-py, the ``nats`` CLI, nats.js,
nats.go) with default options gets its replies; no component may subscribe under ``_INBOX``,
so components cannot read a client's replies either.

- ``admin`` (the CLI): every ``kyb.api.*`` verb, reads of every bucket (``get -w``,
  describe), the events stream, ``kyb.node.*.logs|exec|attach|cancel|portforward`` (and the
  sessions' ``.<session>`` subjects) and ``kyb.metrics.*``. It writes objects only through
  the api, like any user.
- ``api``: reads and writes every bucket (it writes what users publish) and creates them.
- a controller: reads every bucket but Secrets, writes the buckets of the kinds it owns
  (:data:`CONTROLLER_WRITES`) and its leader lease.
- ``kubelet-<node>``: reads the buckets it needs (not Secrets), writes only its own Node and
  Lease, answers only ``kyb.node.<node>.*`` and changes its pods' status, deletes its
  terminated pods and reads the Secrets its pods use only through ``kyb.api.node.<node>.*``,
  where the api checks that the pod is bound to that node (Kubernetes' NodeRestriction).
- ``apiserver`` (the Kubernetes HTTP API): what ``admin`` may do, under its own inbox prefix:
  it writes only through ``kyb.api.*`` and reads the buckets and streams for lists and watches.
- ``system``: everything; only ``kyb up`` uses it, to create the buckets at start.

Credentials files are ``KEY=value`` lines (``KYB_NATS_USER``, ``KYB_NATS_PASSWORD``): a shell
can source them, a systemd unit reads them as its ``EnvironmentFile``, and any NATS client
takes the two values as its user and password. They and the server configuration are written
0600.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec

from kyb import events
from schemas.registry import all_kinds, by_kind

ENV_CREDS = "KYB_NATS_CREDS"
ENV_USER = "KYB_NATS_USER"
ENV_PASSWORD = "KYB_NATS_PASSWORD"
ENV_TLS_CA = "KYB_NATS_TLS_CA"
ENV_TLS_CERT = "KYB_NATS_TLS_CERT"
ENV_TLS_KEY = "KYB_NATS_TLS_KEY"

SECRETS_BUCKET = "kyb-secrets"
LEASE_BUCKET = "kyb-leases"
ALLOCATIONS_BUCKET = "kyb-allocations"
EVENTS_STREAM = events.EVENTS_STREAM
METRICS_STREAM = "KYB_METRICS"
TRACES_STREAM = "KYB_TRACES"
SCHEDULING_STREAM = "KYB_SCHEDULING"
NODE_LEASE_NAMESPACE = "kube-node-lease"
CONTROLLER_LEASE_NAMESPACE = "kube-system"
NODE_API_PREFIX = "kyb.api.node"  # kyb.api.node.<node>.<verb>, answered by the api
ALL = "*"

# The kinds each controller writes (its own objects and what it manages). Those that create
# namespaced objects write ResourceQuotas too: the store charges each new pod, and each new object
# a count limits, to its namespace's quotas (status.used).
CONTROLLER_WRITES: dict[str, tuple[str, ...]] = {
    "api": (ALL,),
    "gc": (ALL,),
    "scheduler": ("Pod", "PersistentVolumeClaim"),
    "replication": ("Pod", "ReplicaSet", "ReplicationController", "ResourceQuota"),
    "deployment": ("Deployment", "ReplicaSet", "ResourceQuota"),
    "job": ("Job", "Pod", "ResourceQuota"),
    "cronjob": ("CronJob", "Job", "ResourceQuota"),
    "daemonset": ("DaemonSet", "Pod", "ControllerRevision", "ResourceQuota"),
    "statefulset": ("StatefulSet", "Pod", "PersistentVolumeClaim", "ControllerRevision", "ResourceQuota"),
    "disruption": ("PodDisruptionBudget",),
    "clusterroleaggregation": ("ClusterRole",),
    "resourcequota": ("ResourceQuota",),
    "endpoints": ("Endpoints", "EndpointSlice", "ResourceQuota"),
    "nodelifecycle": ("Node", "Pod"),
    "nodeipam": ("Node",),
    "netagent": (),
    "netpol": (),
    "hpa": ("HorizontalPodAutoscaler", "Deployment", "ReplicaSet", "ReplicationController", "StatefulSet"),
    "volumebinder": ("PersistentVolume", "PersistentVolumeClaim", "Pod"),
    "ingress": ("Ingress",),
    "proxy": (),
    "dns": (),
}
# Who reads Secrets straight from the bucket (the kubelet goes through the api).
SECRET_READERS = frozenset({"admin", "api", "gc", "ingress"})
# Extra streams a component creates and uses.
COMPONENT_STREAMS: dict[str, tuple[str, ...]] = {
    "scheduler": (SCHEDULING_STREAM,),
    "kubelet": (METRICS_STREAM,),
}


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """A NATS user's rights: subjects it may publish to and subscribe on."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responder: bool = False  # may reply to requests it receives (any number of messages)


class User(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    password: str
    permissions: Permissions


# -- permission sets ------------------------------------------------------------------------


def object_buckets() -> list[str]:
    return sorted({info.bucket for info in all_kinds()})


# Users that people and their tools connect as: NATS' default inbox prefix, see the docstring.
CLIENT_USERS = frozenset({"admin"})
CLIENT_INBOX = "_INBOX"
COMPONENT_INBOX = "_REPLY"


def inbox_prefix(user: str) -> str:
    if user in CLIENT_USERS:
        return CLIENT_INBOX
    return f"{COMPONENT_INBOX}.{user.replace('.', '_')}"


def stream_read(stream: str) -> list[str]:
    """What reading a stream takes: info, direct and plain message gets, ephemeral consumers."""
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def stream_manage(stream: str) -> list[str]:
    return [f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.UPDATE.{stream}"]


def bucket_read(bucket: str) -> list[str]:
    return stream_read(f"KV_{bucket}")


def bucket_write(bucket: str, keys: str = ">") -> list[str]:
    return [f"$KV.{bucket}.{keys}"]


# The buckets of custom kinds (kyb-<plural>_<group>) come and go with their CRDs, and NATS
# wildcards match whole subject tokens only, so their readers may read any stream and their
# writer (the api) write any bucket: only users that already hold every object bucket get these.
CUSTOM_BUCKETS_READ = stream_read("*")
CUSTOM_BUCKETS_WRITE = ["$KV.*.>", "$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.UPDATE.*"]


def _buckets_of(kinds: tuple[str, ...]) -> list[str]:
    if ALL in kinds:
        return object_buckets()
    out = []
    for kind in kinds:
        try:
            out.append(by_kind(kind).bucket)
        except Exception:  # a kind this installation does not have
            continue
    return sorted(set(out))


def _common(user: str) -> tuple[list[str], list[str]]:
    """Every component: record events, read the events stream's info, get its replies."""
    publish = ["kyb.events.>", f"$JS.API.STREAM.INFO.{EVENTS_STREAM}", "kyb.traces.>", "$JS.API.STREAM.NAMES", "$JS.API.INFO"]
    publish += stream_read(TRACES_STREAM) + stream_manage(TRACES_STREAM)  # finished spans
    return publish, [inbox_prefix(user) + ".>"]


def admin_permissions(user: str = "admin") -> Permissions:
    publish, subscribe = _common(user)
    publish += ["kyb.api.>", "kyb.node.*.logs", "kyb.node.*.exec", "kyb.node.*.exec.>", "kyb.node.*.attach",
                "kyb.node.*.attach.>", "kyb.node.*.cancel", "kyb.node.*.portforward", "kyb.node.*.portforward.>",
                "$JS.API.INFO"]
    for bucket in object_buckets():
        publish += bucket_read(bucket)
    for stream in (EVENTS_STREAM, METRICS_STREAM):
        publish += stream_read(stream)
    publish += CUSTOM_BUCKETS_READ
    subscribe += ["kyb.metrics.>"]
    return Permissions(publish=tuple(publish), subscribe=tuple(subscribe))


def apiserver_permissions(user: str = "apiserver") -> Permissions:
    """The Kubernetes API's rights: the admin's (every write through the api), as a component."""
    return admin_permissions(user)


def controller_permissions(component: str, user: str | None = None) -> Permissions:
    """A controller's (or the api's) rights; see the module docstring."""
    user = user or component
    publish, subscribe = _common(user)
    readable = [b for b in object_buckets() if component in SECRET_READERS or b != SECRETS_BUCKET]
    for bucket in readable:
        publish += bucket_read(bucket)
    for bucket in _buckets_of(CONTROLLER_WRITES.get(component, ())):
        publish += bucket_write(bucket)
    if ALL in CONTROLLER_WRITES.get(component, ()) and component in SECRET_READERS:
        publish += CUSTOM_BUCKETS_READ + CUSTOM_BUCKETS_WRITE  # every bucket, custom kinds' too (gc)
    publish += bucket_read(LEASE_BUCKET) + bucket_write(LEASE_BUCKET, f"{CONTROLLER_LEASE_NAMESPACE}.>")
    for stream in COMPONENT_STREAMS.get(component, ()):
        publish += stream_read(stream) + stream_manage(stream)
    if component == "scheduler":
        publish += ["kyb.scheduling.>"]
    if component == "hpa":
        subscribe += ["kyb.metrics.>"]
        publish += stream_read(METRICS_STREAM)
    responder = False
    if component == "api":
        publish += bucket_read(ALLOCATIONS_BUCKET) + bucket_write(ALLOCATIONS_BUCKET)
        publish += stream_manage(f"KV_{ALLOCATIONS_BUCKET}")
        for bucket in object_buckets():
            publish += stream_manage(f"KV_{bucket}")
        publish += CUSTOM_BUCKETS_READ + CUSTOM_BUCKETS_WRITE
        publish += stream_manage(EVENTS_STREAM)
        subscribe += ["kyb.api.*", f"{NODE_API_PREFIX}.*.*"]
        responder = True
    return Permissions(publish=tuple(dict.fromkeys(publish)), subscribe=tuple(subscribe), responder=responder)


def kubelet_permissions(node: str, user: str | None = None) -> Permissions:
    """Kubelet ``node``: its own Node, Lease and node subjects; pods through the api."""
    user = user or kubelet_user(node)
    publish, subscribe = _common(user)
    for bucket in object_buckets():
        if bucket != SECRETS_BUCKET:
            publish += bucket_read(bucket)
    publish += bucket_write(by_kind("Node").bucket, f"_.{node}")
    publish += bucket_write(LEASE_BUCKET, f"{NODE_LEASE_NAMESPACE}.{node}")
    publish += [f"{NODE_API_PREFIX}.{node}.*", f"kyb.metrics.{node}"]
    publish += stream_read(METRICS_STREAM) + stream_manage(METRICS_STREAM)
    subscribe += [f"kyb.node.{node}.>"]
    return Permissions(publish=tuple(dict.fromkeys(publish)), subscribe=tuple(subscribe), responder=True)


def system_permissions() -> Permissions:
    return Permissions(publish=(">",), subscribe=(">",), responder=True)


def kubelet_user(node: str) -> str:
    return f"kubelet-{node}"


def permissions_for(component: str, *, node: str | None = None) -> Permissions:
    if component == "admin":
        return admin_permissions()
    if component == "system":
        return system_permissions()
    if component == "apiserver":
        return apiserver_permissions()
    if component == "kubelet":
        if not node:
            raise ValueError("a kubelet's credentials are for one node: name it")
        return kubelet_permissions(node)
    return controller_permissions(component)


# -- server configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate and key, and the CA clients verify it with."""

    cert: str
    key: str
    ca: str | None = None


def render_server_config(users: list[User], tls: TlsFiles | None = None) -> str:
    """The nats-server configuration (JSON is valid NATS config) enforcing ``users``."""
    entries = []
    for u in users:
        perms: dict[str, Any] = {
            "publish": {"allow": list(u.permissions.publish)},
            "subscribe": {"allow": list(u.permissions.subscribe)},
        }
        if u.permissions.responder:
            perms["allow_responses"] = {"max": 1_000_000, "expires": "1h"}
        entries.append({"user": u.name, "password": u.password, "permissions": perms})
    config: dict[str, Any] = {"authorization": {"users": entries, "timeout": 5}}
    if tls is not None:
        block: dict[str, Any] = {"cert_file": tls.cert, "key_file": tls.key, "timeout": 5}
        if tls.ca:
            block["ca_file"] = tls.ca
        config["tls"] = block
    return json.dumps(config, indent=2) + "\n"


# -- credentials files -----------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def write_creds(path: Path, user: str, password: str) -> Path:
    _write_private(Path(path), f"{ENV_USER}={user}\n{ENV_PASSWORD}={password}\n")
    return Path(path)


def read_creds(path: Path | str) -> tuple[str, str]:
    values: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            values[k.strip()] = v.strip()
    try:
        return values[ENV_USER], values[ENV_PASSWORD]
    except KeyError as e:
        raise ValueError(f"{path}: credentials need {ENV_USER}= and {ENV_PASSWORD}= lines") from e


@dataclass(frozen=True)
class AuthLayout:
    """What :func:`generate` wrote under ``<data-dir>/auth``."""

    dir: Path
    server_config: Path
    creds: dict[str, Path]  # component -> its credentials file

    def creds_for(self, component: str) -> Path | None:
        return self.creds.get(component)


def generate(auth_dir: Path, components: list[str], *, nodes: list[str] = (), tls: TlsFiles | None = None) -> AuthLayout:
    """Users for ``components`` (+ admin and system) and one kubelet per node: credentials
    files (kept across runs: passwords are generated once) and the server configuration."""
    auth_dir = Path(auth_dir)
    auth_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(auth_dir, 0o700)
    wanted: list[tuple[str, str, Permissions]] = [
        ("admin", "admin", admin_permissions()),
        ("system", "system", system_permissions()),
    ]
    for c in components:
        if c == "kubelet" or c in ("admin", "system"):
            continue
        wanted.append((c, c, apiserver_permissions() if c == "apiserver" else controller_permissions(c)))
    for node in nodes:
        wanted.append((kubelet_user(node), kubelet_user(node), kubelet_permissions(node)))
    users: list[User] = []
    creds: dict[str, Path] = {}
    for component, name, perms in wanted:
        path = auth_dir / f"{component}.creds"
        if path.exists():
            name, password = read_creds(path)
        else:
            password = secrets.token_urlsafe(24)
            write_creds(path, name, password)
        users.append(User(name=name, password=password, permissions=perms))
        creds[component] = path
    server_config = auth_dir / "server.conf"
    _write_private(server_config, render_server_config(users, tls))
    return AuthLayout(dir=auth_dir, server_config=server_config, creds=creds)


# -- the client side --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientAuth:
    """How a client proves who it is and checks the server: user/password (or a credentials
    file holding them) and TLS files."""

    user: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    source: str | None = None  # where user and password came from (a file, an option), for errors

    @property
    def configured(self) -> bool:
        return bool(self.user)

    @classmethod
    def from_creds(cls, path: Path | str, **tls: str | None) -> ClientAuth:
        user, password = read_creds(path)
        return cls(user=user, password=password, source=str(path), **tls)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ClientAuth:
        env = dict(os.environ if env is None else env)
        tls = {"tls_ca": env.get(ENV_TLS_CA) or None, "tls_cert": env.get(ENV_TLS_CERT) or None,
               "tls_key": env.get(ENV_TLS_KEY) or None}
        if env.get(ENV_CREDS):
            return cls.from_creds(env[ENV_CREDS], **tls)
        return cls(user=env.get(ENV_USER) or None, password=env.get(ENV_PASSWORD) or None,
                   source=ENV_USER if env.get(ENV_USER) else None, **tls)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not (self.tls_ca or self.tls_cert):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx

    def nats_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``."""
        out: dict[str, Any] = {}
        if self.user:
            out.update(user=self.user, password=self.password or "", inbox_prefix=inbox_prefix(self.user))
        ctx = self.ssl_context()
        if ctx is not None:
            out["tls"] = ctx
        return out


def admin_creds_path(env: dict[str, str] | None = None) -> Path:
    """Where ``kyb up`` writes the admin's credentials: ``$KYB_DATA_DIR/auth/admin.creds``
    (default data dir ``~/.local/share/kybernetes``)."""
    env = dict(os.environ if env is None else env)
    base = Path(env.get("KYB_DATA_DIR") or Path("~/.local/share/kybernetes").expanduser())
    return base / "auth" / "admin.creds"


def refusal_message(url: str, identity: ClientAuth | None, user: str | None = None) -> str:
    """One line for credentials NATS refused: whose they were and where they came from (never
    the secret), and where ``kyb up`` writes the admin's."""
    written = admin_creds_path()
    name = user or (identity.user if identity is not None else None)
    where = f" (from {identity.source})" if identity is not None and identity.source else ""
    hint = (f"kyb up writes the admin's credentials to <data-dir>/auth/admin.creds ({written} for the default "
            "data dir; set KYB_DATA_DIR for another); name a file with --creds or KYB_NATS_CREDS")
    if not name:
        return (f"NATS at {url} refused the connection (authorization violation): it requires credentials "
                f"and none were found: kyb looked at --creds and "
                f"{ENV_CREDS}, --user and {ENV_USER}, and {written}; {hint}")
    return f'NATS at {url} refused the credentials of user "{name}"{where}: authorization violation; {hint}'


def default_admin_creds(env: dict[str, str] | None = None) -> Path | None:
    """:func:`admin_creds_path` when it exists and is readable."""
    path = admin_creds_path(env)
    try:
        return path if path.is_file() and os.access(path, os.R_OK) else None
    except OSError:
        return None


_default: ClientAuth | None = None


def set_default(auth: ClientAuth | None) -> None:
    """The identity this process's clients use unless told otherwise (set by the CLI)."""
    global _default
    _default = auth


def default() -> ClientAuth:
    return _default if _default is not None else ClientAuth.from_env()


def client_options() -> dict[str, Any]:
    return default().nats_options()


def for_service(name: str, options: dict[str, Any]) -> ClientAuth:
    """A service's identity: its own file in ``options["auth_dir"]`` (what ``kyb up`` writes),
    else ``options["creds"]`` / ``user`` + ``password``, else the environment."""
    base = default()
    tls = {
        "tls_ca": options.get("tls_ca") or base.tls_ca,
        "tls_cert": options.get("tls_cert") or base.tls_cert,
        "tls_key": options.get("tls_key") or base.tls_key,
    }
    auth_dir = options.get("auth_dir")
    if auth_dir:
        candidates = {"bootstrap": "system", "kubelet": kubelet_user(str(options.get("node_name") or ""))}
        for candidate in (candidates.get(name, name),):
            if candidate and (Path(auth_dir) / f"{candidate}.creds").exists():
                return ClientAuth.from_creds(Path(auth_dir) / f"{candidate}.creds", **tls)
    if options.get("creds"):
        return ClientAuth.from_creds(options["creds"], **tls)
    if options.get("user"):
        return ClientAuth(user=str(options["user"]), password=str(options.get("password") or ""), **tls)
    return replace(base, **tls)
