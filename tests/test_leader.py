"""Leader election over the kyb-leases bucket on a real nats-server."""

from __future__ import annotations

import asyncio
import functools
import re

import msgspec
import nats
import pytest

from kyb.leader import LEASE_BUCKET, LeaderElector, Lease, LeaseMeta, LeaseSpec
from tests.cluster import wait_for

FAST = {"lease_seconds": 1, "renew_seconds": 0.2, "retry_seconds": 0.1}
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# Their windows are a few milliseconds wide: poll more often than the default.
eventually = functools.partial(wait_for, interval=0.01)


class Board:
    """Who runs leader work right now, and the most that ever did at once."""

    def __init__(self) -> None:
        self.current: set[str] = set()
        self.peak = 0

    def enter(self, who: str) -> None:
        self.current.add(who)
        self.peak = max(self.peak, len(self.current))

    def leave(self, who: str) -> None:
        self.current.discard(who)


class Candidate:
    def __init__(self, nc: nats.NATS, identity: str, board: Board, **options: float) -> None:
        self.nc = nc
        self.identity = identity
        self.board = board
        self.elector = LeaderElector(nc, "kyb-scheduler", identity, **{**FAST, **options})
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.work_cancelled = False
        self.work_finished = False

    async def work(self, stop_leading: asyncio.Event) -> None:
        self.board.enter(self.identity)
        try:
            await stop_leading.wait()
            self.work_finished = True
        except asyncio.CancelledError:
            self.work_cancelled = True
            raise
        finally:
            self.board.leave(self.identity)

    def start(self) -> Candidate:
        self.task = asyncio.create_task(self.elector.run(self.stop, self.work))
        return self

    async def kill(self) -> None:
        """Die without releasing: cancel the campaign."""
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def candidates(nats_url):
    made: list[Candidate] = []

    async def make(identity: str, board: Board, **options: float) -> Candidate:
        nc = await nats.connect(nats_url)
        c = Candidate(nc, identity, board, **options)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop.set()
        if c.task is not None:
            await asyncio.wait_for(asyncio.gather(c.task, return_exceptions=True), 10)
        await c.nc.close()


async def stored(nc: nats.NATS) -> Lease:
    kv = await nc.jetstream().key_value(LEASE_BUCKET)
    entry = await kv.get("kube-system.kyb-scheduler")
    return msgspec.json.decode(entry.value, type=Lease)


async def test_one_of_two_candidates_leads_and_the_lease_says_who(candidates, nc) -> None:
    board = Board()
    a = (await candidates("a", board)).start()
    b = (await candidates("b", board)).start()
    await eventually(lambda: len(board.current) == 1, what="a leader")
    leader = next(iter(board.current))
    first = await stored(nc)
    # let the leader renew a few times while the other keeps trying
    renewals = {first.spec.renewTime}
    while len(renewals) < 4:
        renewals.add((await stored(nc)).spec.renewTime)
        await asyncio.sleep(0.05)
    lease = await stored(nc)
    assert board.current == {leader} and board.peak == 1
    assert [c.elector.is_leader for c in (a, b)].count(True) == 1
    assert lease.apiVersion == "coordination.k8s.io/v1" and lease.kind == "Lease"
    assert lease.metadata == LeaseMeta(name="kyb-scheduler", namespace="kube-system")
    assert lease.spec.holderIdentity == leader
    assert lease.spec.leaseDurationSeconds == 1
    assert lease.spec.leaseTransitions == 0
    assert lease.spec.acquireTime == first.spec.acquireTime, "renewals keep the acquire time"
    assert MICRO.match(lease.spec.renewTime or "") and MICRO.match(lease.spec.acquireTime or "")


async def test_a_killed_leader_is_replaced_within_a_lease_duration(candidates, nc) -> None:
    board = Board()
    a = (await candidates("a", board)).start()
    await eventually(lambda: board.current == {"a"}, what="a leading")
    b = (await candidates("b", board)).start()
    await eventually(lambda: b.elector.holder == "a", what="b to observe a")
    await a.kill()
    assert a.work_cancelled and board.current == set()
    assert (await stored(nc)).spec.holderIdentity == "a", "a killed leader does not release"
    await eventually(lambda: board.current == {"b"}, timeout=3.0, what="b taking over")
    lease = await stored(nc)
    assert lease.spec.holderIdentity == "b"
    assert lease.spec.leaseTransitions == 1
    assert board.peak == 1


async def test_a_graceful_stop_hands_over_at_once(candidates, nc) -> None:
    board = Board()
    # a long lease: only a release can explain a quick takeover
    a = (await candidates("a", board, lease_seconds=30)).start()
    await eventually(lambda: board.current == {"a"}, what="a leading")
    b = (await candidates("b", board, lease_seconds=30)).start()
    await eventually(lambda: b.elector.holder == "a", what="b to observe a")
    a.stop.set()
    await asyncio.wait_for(a.task, 5)
    assert a.work_finished and not a.work_cancelled, "graceful stop lets the work return"
    released = await stored(nc)
    assert released.spec.holderIdentity in ("", "b")
    await eventually(lambda: board.current == {"b"}, timeout=5.0, what="b taking over")
    assert (await stored(nc)).spec.leaseTransitions == 1


async def test_compare_and_set_lets_only_one_racer_take_an_expired_lease(nc) -> None:
    js = nc.jetstream()
    kv = await js.create_key_value(bucket=LEASE_BUCKET, history=1)
    stale = Lease(
        metadata=LeaseMeta(name="kyb-scheduler"),
        spec=LeaseSpec(
            holderIdentity="ghost",
            leaseDurationSeconds=15,
            acquireTime="2024-01-01T00:00:00.000000Z",
            renewTime="2024-01-01T00:00:00.000000Z",
            leaseTransitions=4,
        ),
    )
    await kv.create("kube-system.kyb-scheduler", msgspec.json.encode(stale))
    now = [1000.0]
    racers = [LeaderElector(nc, "kyb-scheduler", f"r{i}", clock=lambda: now[0]) for i in range(5)]
    assert await asyncio.gather(*(r.try_acquire_or_renew() for r in racers)) == [False] * 5, (
        "a lease seen for the first time is respected for a whole lease duration"
    )
    now[0] += 14.0
    assert await asyncio.gather(*(r.try_acquire_or_renew() for r in racers)) == [False] * 5
    now[0] += 1.5
    won = await asyncio.gather(*(r.try_acquire_or_renew() for r in racers))
    assert won.count(True) == 1
    winner = racers[won.index(True)].identity
    lease = await stored(nc)
    assert lease.spec.holderIdentity == winner
    assert lease.spec.leaseTransitions == 5
    losers = [r for r in racers if r.identity != winner]
    assert await asyncio.gather(*(r.try_acquire_or_renew() for r in losers)) == [False] * 4


async def test_leader_steps_down_when_someone_else_holds_the_lease(candidates, nc) -> None:
    board = Board()
    a = (await candidates("a", board)).start()
    await eventually(lambda: board.current == {"a"}, what="a leading")
    kv = await nc.jetstream().key_value(LEASE_BUCKET)
    intruder = Lease(
        metadata=LeaseMeta(name="kyb-scheduler"),
        spec=LeaseSpec(holderIdentity="intruder", leaseDurationSeconds=30),
    )
    await kv.put("kube-system.kyb-scheduler", msgspec.json.encode(intruder))
    await eventually(lambda: a.work_cancelled, timeout=3.0, what="a stepping down")
    assert board.current == set() and not a.elector.is_leader


async def test_leader_steps_down_when_it_cannot_renew_before_the_deadline(candidates) -> None:
    board = Board()
    a = (await candidates("a", board)).start()
    await eventually(lambda: board.current == {"a"}, what="a leading")
    await a.nc.close()  # the bus is gone for a: renewals fail
    await eventually(lambda: a.work_cancelled, timeout=3.0, what="a stepping down")
    assert board.current == set()


async def test_a_controller_runs_only_while_its_replica_leads(nc) -> None:
    from kyb.controller import Controller

    reconciled: list[str] = []

    async def reconcile(key: str, _ctx: object) -> None:
        reconciled.append(key)

    controller = Controller("replication", reconcile, resync_seconds=None, keys=lambda: ["default.web"])
    elector = LeaderElector(nc, "kyb-scheduler", "a", **FAST)
    stop = asyncio.Event()
    task = asyncio.create_task(elector.run(stop, controller.run))
    await eventually(lambda: reconciled == ["default.web"], what="the leader's controller to resync")
    assert elector.is_leader
    stop.set()
    await asyncio.wait_for(task, 5)
    assert not elector.is_leader
    assert (await stored(nc)).spec.holderIdentity == "", "a graceful stop releases the lease"
