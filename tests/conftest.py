"""Shared fixtures: a real nats-server on a free port with a temporary store, a client on it,
one with the api service running on it, and the Docker gate (skip without an engine, fail
when KYB_REQUIRE_DOCKER=1)."""

from __future__ import annotations

import asyncio
import os

import pytest

from kyb.client import ApiClient
from kyb.natsd import NatsServer, free_port
from kyb.serve import run_services
from kyb.store import Store
from tests.cluster import QUIET, Services, wait_api
from tests.kybup import up_factory  # noqa: F401  (fixture: a real `kyb up` of the test's own)


@pytest.fixture
def nats_server(tmp_path):
    server = NatsServer(store_dir=tmp_path / "jetstream", port=free_port(), log_file=tmp_path / "nats.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server) -> str:
    return nats_server.url


@pytest.fixture
async def api_nc(nats_url):
    """A client of a real nats-server on which the api service runs (and answers)."""
    import nats

    stop = asyncio.Event()
    task = asyncio.create_task(run_services(["api"], nats_url, {}, stop))
    client = await nats.connect(nats_url)
    await wait_api(client, task)
    yield client
    stop.set()
    await asyncio.wait_for(task, 20)
    await client.close()


@pytest.fixture
async def api(nats_url, nc):
    """The api service on the test's nats-server: a client of it and a store on the same server."""
    services = Services(["api"], nats_url, QUIET).start()
    await wait_api(nc, services.task)
    try:
        yield ApiClient(nc), Store(nc.jetstream())
    finally:
        await services.stop()


@pytest.fixture
async def nc(nats_url):
    import nats

    client = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    yield client
    await client.close()


def docker_available() -> tuple[bool, str]:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True, ""
    except Exception as e:  # any failure means: no engine here
        return False, f"no Docker engine answers ({type(e).__name__}: {e})"


@pytest.fixture(scope="session")
def docker_engine():
    ok, why = docker_available()
    if not ok:
        if os.environ.get("KYB_REQUIRE_DOCKER") == "1":
            pytest.fail(f"KYB_REQUIRE_DOCKER=1 but {why}")
        pytest.skip(why)
    import docker

    client = docker.from_env()
    yield client
    client.close()


# -- no test leaks tasks ---------------------------------------------------------------------

LEAK_GRACE_S = 2.0


def pytest_collection_modifyitems(items):
    """Every async test runs under ``no_task_leaks``."""
    import inspect

    for item in items:
        fn = getattr(item, "function", None)
        if fn is not None and inspect.iscoroutinefunction(fn) and "no_task_leaks" not in item.fixturenames:
            item.fixturenames.insert(0, "no_task_leaks")  # first set up, so last torn down


@pytest.fixture
async def no_task_leaks():
    """Fail a test that leaves tasks running after it and its fixtures are done.

    Set up before (so torn down after) the test's other fixtures: what is still pending here,
    and was not before the test began, was started by the test and never ended. A task gets
    ``LEAK_GRACE_S`` to finish what it was cancelled or closed into."""
    import asyncio

    before = asyncio.all_tasks()
    yield
    me = asyncio.current_task()
    deadline = asyncio.get_running_loop().time() + LEAK_GRACE_S
    while True:
        leaked = [t for t in asyncio.all_tasks() if t is not me and t not in before and not t.done()]
        if not leaked or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.wait(leaked, timeout=0.05)
    if leaked:
        for t in leaked:
            t.cancel()
        await asyncio.wait(leaked, timeout=1)
        names = ", ".join(sorted(f"{t.get_name()} ({t.get_coro().__qualname__})" for t in leaked))
        pytest.fail(f"the test left {len(leaked)} task(s) running: {names}", pytrace=False)
