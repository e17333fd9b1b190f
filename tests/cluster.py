"""In-test cluster scaffolding shared by the integration tests (no tests here): services run
in-process with ``run_services`` in a task, polls with a deadline instead of sleeps, the wait
for the api to answer, and the pieces of a Docker end-to-end setup (a kubelet's options, its
node turning Ready, the containers of a pod, clearing a node's containers afterwards)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from kyb import errors
from kyb.serve import run_services
from kyb.store import Store
from services.kubelet.runtime.base import LABEL_POD_UID

T = TypeVar("T")

QUIET: dict[str, Any] = {"configure_logging": False}
# Leases short enough that a restarted or standby controller takes over within a test.
FAST_LEASE: dict[str, Any] = {"lease_seconds": 1.5, "renew_seconds": 0.3, "retry_seconds": 0.2, **QUIET}


async def wait_for(
    predicate: Callable[[], Awaitable[Any]],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (errors.NotFound,),
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds
    pass (AssertionError naming ``what`` and the last result). Exceptions of the ``ignoring``
    types count as "not yet" (by default NotFound: the object is not there yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await predicate()
        except ignoring as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


async def eventually(fn: Callable[[], Awaitable[T | None]], what: str, timeout: float = 20.0) -> T:
    """``wait_for`` with the description first; any exception of ``fn`` fails at once."""
    return await wait_for(fn, timeout, what, ignoring=())


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
    """The Docker containers (any state) of the pod with ``uid``."""
    return engine.containers.list(all=True, filters={"label": f"{LABEL_POD_UID}={uid}"})


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
