"""run_as_leader on a real nats-server: informers started first, the work runs only while the
lease is held (with the timings from the service options), and everything stops on stop."""

from __future__ import annotations

import asyncio
import functools

import pytest

from kyb.leader import LeaderElector
from kyb.leading import lease_options, run_as_leader
from kyb.serve import ServiceContext
from kyb.store import Store
from tests.cluster import wait_for

# Their windows are a few milliseconds wide: poll more often than the default.
eventually = functools.partial(wait_for, interval=0.01)


class _Work:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.leading = False

    async def run(self, stop_leading: asyncio.Event) -> None:
        self.journal.append("work")
        self.leading = True
        try:
            await stop_leading.wait()
        finally:
            self.leading = False


class FakeComponent:
    """Records the order in which run_as_leader drives it."""

    def __init__(self) -> None:
        self.journal: list[str] = []
        self.controller = _Work(self.journal)

    async def start(self) -> None:
        self.journal.append("start")

    async def stop(self) -> None:
        self.journal.append("stop")


def context(nc, name: str, **options) -> ServiceContext:
    return ServiceContext(name=name, nc=nc, js=nc.jetstream(), store=Store(nc.jetstream()), options=options)


def test_lease_options_default_and_parse_strings():
    assert lease_options({}) == {"lease_seconds": 15.0, "renew_seconds": 5.0, "retry_seconds": 2.0}
    assert lease_options({"lease_seconds": "3", "renew_seconds": "1", "retry_seconds": "0.5"}) == {
        "lease_seconds": 3.0,
        "renew_seconds": 1.0,
        "retry_seconds": 0.5,
    }


async def test_work_runs_while_leading_and_everything_stops(nc):
    comp = FakeComponent()
    ctx = context(nc, "demo", lease_seconds=1.5, renew_seconds=0.3, retry_seconds=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(run_as_leader(ctx, "kyb-demo", comp, stop))
    await eventually(lambda: comp.controller.leading, what="the work to run as leader")
    lease = await LeaderElector(nc, "kyb-demo", "observer").read()
    assert lease is not None
    assert lease.spec.holderIdentity == ctx.identity
    assert lease.spec.leaseDurationSeconds == 2  # 1.5 s from the options, rounded up
    stop.set()
    await asyncio.wait_for(task, 10)
    assert comp.journal == ["start", "work", "stop"]
    released = await LeaderElector(nc, "kyb-demo", "observer").read()
    assert released is not None and released.spec.holderIdentity == ""  # a standby may take over at once


async def test_a_standby_runs_no_work_until_the_leader_stops(nc):
    first, second = FakeComponent(), FakeComponent()
    fast = {"lease_seconds": 1.5, "renew_seconds": 0.3, "retry_seconds": 0.2}
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(run_as_leader(context(nc, "a", **fast), "kyb-demo", first, stop_first))
    await eventually(lambda: first.controller.leading, what="the first to lead")
    b = asyncio.create_task(run_as_leader(context(nc, "b", **fast), "kyb-demo", second, stop_second))
    await eventually(lambda: second.journal == ["start"], what="the standby's informers to start")
    assert not second.controller.leading
    stop_first.set()
    await asyncio.wait_for(a, 10)
    await eventually(lambda: second.controller.leading, what="the standby to take over")
    stop_second.set()
    await asyncio.wait_for(b, 10)
    assert second.journal == ["start", "work", "stop"]


async def test_component_stops_even_when_the_lease_options_are_invalid(nc):
    comp = FakeComponent()
    ctx = context(nc, "demo", lease_seconds=1, renew_seconds=5)  # renew after the lease ran out
    with pytest.raises(ValueError):
        await run_as_leader(ctx, "kyb-demo", comp, asyncio.Event())
    assert comp.journal == ["start", "stop"]
