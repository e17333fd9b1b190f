"""In-test cluster scaffolding shared by the integration tests and the benchmarks (no tests
here): services run in-process with ``run_services`` in a task, polls with a deadline instead of
sleeps, the wait for the api to answer, hollow nodes and the one hollow kubelet that runs their
pods without containers, and the pieces of a Docker end-to-end setup (a kubelet's options, its
node turning Ready, the containers of a pod, clearing a node's containers afterwards)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from kyb import errors
from kyb.client import ApiClient
from kyb.hollow import Finish, HollowKubelet, Phase, Ready, hollow_node  # noqa: F401  (re-exported)
from kyb.serve import run_services
from kyb.store import Store
from services.kubelet.runtime.base import LABEL_POD_UID

T = TypeVar("T")

QUIET: dict[str, Any] = {"configure_logging": False}
# Leases short enough that a restarted or standby controller takes over within a test.
FAST_LEASE: dict[str, Any] = {"lease_seconds": 1.5, "renew_seconds": 0.3, "retry_seconds": 0.2, **QUIET}


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "condition",
    explain: Callable[[], Awaitable[str]] | None = None,
    *,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (errors.NotFound,),
) -> Any:
    """Poll ``predicate`` (a plain function or a coroutine function) until it returns something
    truthy (returned) or ``timeout`` seconds pass (AssertionError naming ``what``, the last
    result and, when given, what ``explain()`` says). Exceptions of the ``ignoring`` types count
    as "not yet" (by default NotFound: the object is not there yet); ``ignoring=()`` fails at
    the first exception. The one polling helper of the async tests."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
        except ignoring as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            detail = f"; {await explain()}" if explain is not None else ""
            raise AssertionError(f"{what} not met within {timeout}s (last: {last!r}){detail}")
        await asyncio.sleep(interval)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    interval: float = 0.2,
) -> Any:
    """:func:`wait_for` for plain functions (tests that drive a `kyb` subprocess): poll until
    ``predicate`` returns something truthy, or AssertionError naming ``what`` and the last result."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")
        time.sleep(interval)


class Services:
    """``run_services`` in a task, stoppable and restartable."""

    def __init__(self, names: list[str], url: str, options: dict[str, Any] | None = None) -> None:
        self.names, self.url, self.options = names, url, dict(options or {})
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> Services:
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(run_services(self.names, self.url, self.options, self.stop_event))
        return self

    async def stop(self, timeout: float = 30) -> None:
        self.stop_event.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout)


class ServiceTasks:
    """Services started by name, each in a task of its own so that one can be stopped alone:
    gracefully, or cancelled like a crash (``kill``). ``services`` maps a name to its stop event
    and task; a test may add its own pair."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(FAST_LEASE if options is None else options)
        self.services: dict[str, tuple[asyncio.Event, asyncio.Task]] = {}

    def start(self, *names: str) -> None:
        for name in names:
            stop = asyncio.Event()
            self.services[name] = (stop, asyncio.create_task(run_services([name], self.url, self.options, stop)))

    async def stop(self, name: str, *, kill: bool = False) -> None:
        stop, task = self.services.pop(name)
        if kill:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        stop.set()
        await asyncio.wait_for(task, 20)

    async def stop_all(self) -> None:
        for name in list(self.services):
            await self.stop(name)


def workload_manifest(
    kind: str,
    name: str,
    replicas: int,
    image: str,
    *,
    labels: dict[str, str] | None = None,
    container: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Deployment or ReplicaSet (``kind``) in ``default`` of ``replicas`` pods labelled
    ``labels`` (``app: name`` by default; selected by their ``app``) running one container
    ``app`` of ``image``; ``container`` adds to that container, ``spec`` to the spec
    (``strategy``, ``minReadySeconds``, ``progressDeadlineSeconds``...)."""
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": labels["app"]}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image, **(container or {})}]},
            },
            **spec,
        },
    }


async def deployment_rolled_out(api: ApiClient, name: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until Deployment ``name`` in ``default`` has rolled out as ``kyb rollout status``
    would say (every replica updated and available, Progressing: NewReplicaSetAvailable)."""

    async def done() -> dict[str, Any] | None:
        d = await api.get("deployments", "default", name)
        s = d.get("status") or {}
        conds = {c["type"]: c for c in s.get("conditions") or []}
        ok = (
            s.get("observedGeneration") == d["metadata"]["generation"]
            and s.get("updatedReplicas") == s.get("availableReplicas") == s.get("replicas") == d["spec"]["replicas"]
            and conds.get("Progressing", {}).get("reason") == "NewReplicaSetAvailable"
        )
        return d if ok else None

    return await wait_for(done, timeout, f"deployment {name} rolled out")


async def api_up(nc: Any) -> bool:
    """True once the api answers a raw ``kyb.api.get`` on ``nc`` (any NATS client will do)."""
    with contextlib.suppress(Exception):
        msg = await nc.request("kyb.api.get", b'{"kind":"ns","name":"default"}', timeout=0.5)
        return bool(msg.headers and msg.headers.get("Kyb-Status") == "200")
    return False


async def wait_api(nc: Any, task: asyncio.Task | None = None, timeout: float = 20.0) -> None:
    """Wait until the api answers; if the services' ``task`` ends meanwhile, raise what it raised."""

    async def up() -> bool:
        if task is not None and task.done():
            task.result()
        return await api_up(nc)

    await wait_for(up, timeout, "api up")


def docker_kubelet_options(node: str, tmp_path: Path, pod_cidr: str, **extra: Any) -> dict[str, Any]:
    """The options of a docker kubelet for node ``node`` with its state under ``tmp_path``."""
    return {
        **QUIET,
        "node_name": node,
        "runtime": "docker",
        "state_dir": str(tmp_path / "kubelet"),
        "relist": 0.2,
        "pod_cidr": pod_cidr,
        **extra,
    }


async def node_ready(store: Store, node: str, *, untainted: bool = False) -> bool:
    """Whether ``node`` is registered and Ready (and, with ``untainted``, carries no taint)."""
    with contextlib.suppress(errors.KybError):
        n = await store.get("Node", None, node)
        ready = any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)  # type: ignore[attr-defined]
        return ready and not (untainted and n.spec.taints)  # type: ignore[attr-defined]
    return False


def containers_of(engine: Any, uid: str) -> list[Any]:
    """The Docker containers (any state) of the pod with ``uid``, inspected; one removed between
    the listing and its inspection (a kubelet cleaning up meanwhile) is gone, not an error."""
    import docker

    found = []
    for c in engine.containers.list(all=True, sparse=True, filters={"label": f"{LABEL_POD_UID}={uid}"}):
        try:
            c.reload()
        except docker.errors.NotFound:
            continue
        found.append(c)
    return found


async def remove_containers(node: str) -> None:
    """Remove every sandbox and container the docker runtime of ``node`` left behind."""
    from services.kubelet.runtime.docker import DockerRuntime

    rt = DockerRuntime(node_name=node)
    try:
        for uid in set(await rt.list_sandboxes()) | {i.pod_uid for i in await rt.list()}:
            if uid:
                with contextlib.suppress(Exception):
                    await rt.remove_sandbox(uid)
    finally:
        await rt.close()


async def remove_process_pods(node: str) -> None:
    """End every pod the process runtime of ``node``'s kubelet (default state directory) left running."""
    import tempfile

    from services.kubelet.runtime.process import ProcessRuntime

    state = Path(tempfile.gettempdir()) / f"kyb-kubelet-{node}" / "process"
    if not state.exists():
        return
    rt = ProcessRuntime(state)
    try:
        for uid in set(await rt.list_sandboxes()) | {i.pod_uid for i in await rt.list()}:
            if uid:
                await rt.remove_sandbox(uid)
    finally:
        await rt.close()


# --- hollow nodes and their kubelet: the product's own simulator (kyb.hollow) ----------------


class HollowCluster(ServiceTasks):
    """Services started by name on ``url``, a store and an api client on ``nc``, and a hollow
    kubelet (not started) that binds pods to ``hollow-0`` and readies them as ``ready`` says."""

    def __init__(self, nc: Any, url: str, *, ready: Ready | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.nc = nc
        self.store = Store(nc.jetstream())
        self.api = ApiClient(nc)
        self.kubelet = HollowKubelet(self.store, nc, node="hollow-0", ready=ready)
