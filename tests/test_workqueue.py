"""The per-key work queue and the controller loop built on it."""

from __future__ import annotations

import asyncio
import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kyb import errors
from kyb.controller import Controller
from kyb.workqueue import ManualClock, ShutDown, WorkQueue
from tests.cluster import wait_for

KEYS = st.sampled_from(["default.a", "default.b", "kube-system.c"])


# -- properties of the synchronous core --------------------------------------------------------


# Their windows are a few milliseconds wide: poll more often than the default.
eventually = functools.partial(wait_for, interval=0.005)


class QueueMachine(RuleBasedStateMachine):
    """Random adds, delayed adds, takes, successes, failures and clock moves."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.q: WorkQueue[int] = WorkQueue(base_delay=0.005, max_delay=1.0, clock=self.clock)
        self.step = 0
        self.in_flight: list[str] = []
        self.last_add: dict[str, int] = {}
        self.last_start: dict[str, int] = {}

    def _tick(self) -> int:
        self.step += 1
        return self.step

    @rule(key=KEYS, ctx=st.one_of(st.none(), st.integers()))
    def add(self, key: str, ctx: int | None) -> None:
        self.last_add[key] = self._tick()
        self.q.add(key, ctx)

    @rule(key=KEYS, delay=st.floats(min_value=0.0, max_value=3.0))
    def add_after(self, key: str, delay: float) -> None:
        self.last_add[key] = self._tick()
        self.q.add_after(key, delay)

    @rule()
    def take(self) -> None:
        item = self.q.try_get()
        if item is None:
            return
        key = item[0]
        assert key not in self.in_flight, f"{key} handed out while already in flight"
        assert key in self.last_add, f"{key} handed out but never added"
        self.in_flight.append(key)
        self.last_start[key] = self._tick()

    @precondition(lambda self: self.in_flight)
    @rule(i=st.integers(min_value=0), fail=st.booleans())
    def finish(self, i: int, fail: bool) -> None:
        key = self.in_flight.pop(i % len(self.in_flight))
        if fail:
            self.last_add[key] = self._tick()
            self.q.add_rate_limited(key)
        else:
            self.q.forget(key)
        self.q.done(key)

    @rule(dt=st.floats(min_value=0.0, max_value=2.0))
    def advance(self, dt: float) -> None:
        self._tick()
        self.clock.advance(dt)

    @invariant()
    def in_flight_matches(self) -> None:
        assert self.q.in_flight == frozenset(self.in_flight)

    def teardown(self) -> None:
        for key in self.in_flight:
            self.q.forget(key)
            self.q.done(key)
        self.in_flight.clear()
        for _ in range(100):
            if self.q.is_idle():
                break
            self.clock.advance(10.0)
            while (item := self.q.try_get()) is not None:
                self.last_start[item[0]] = self._tick()
                self.q.done(item[0])
        assert self.q.is_idle(), "queue never drained"
        for key, added in self.last_add.items():
            assert self.last_start.get(key, -1) > added, f"{key} not processed after its last add"


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(st.integers(min_value=1, max_value=80), st.floats(min_value=0.01, max_value=1000.0))
def test_backoff_doubles_from_5ms_up_to_the_cap(failures: int, cap: float) -> None:
    q: WorkQueue[None] = WorkQueue(max_delay=cap, clock=ManualClock())
    delays = [q.when("k") for _ in range(failures)]
    assert delays[0] == min(0.005, cap)
    assert all(b == min(a * 2, cap) for a, b in zip(delays, delays[1:], strict=False))
    assert max(delays) <= cap
    assert q.num_requeues("k") == failures
    q.forget("k")
    assert q.when("k") == min(0.005, cap)


def test_default_cap_is_sixty_seconds() -> None:
    q: WorkQueue[None] = WorkQueue(clock=ManualClock())
    assert [q.when("k") for _ in range(20)][-1] == 60.0


def test_adds_are_deduplicated_and_keep_the_latest_context() -> None:
    q: WorkQueue[str] = WorkQueue(clock=ManualClock())
    q.add("a", "trace-1")
    q.add("b")
    q.add("a", "trace-2")
    q.add("a")  # no context: keeps trace-2
    assert len(q) == 2
    assert q.try_get() == ("a", "trace-2")
    assert q.try_get() == ("b", None)
    assert q.try_get() is None


def test_re_adds_while_in_flight_collapse_into_one_rerun() -> None:
    q: WorkQueue[str] = WorkQueue(clock=ManualClock())
    q.add("a")
    assert q.try_get() == ("a", None)
    q.add("a", "t1")
    q.add("a", "t2")
    assert q.try_get() is None, "a key in flight must not be handed out again"
    q.done("a")
    assert q.try_get() == ("a", "t2")
    q.done("a")
    assert q.try_get() is None


def test_add_after_waits_for_the_clock_and_earliest_time_wins() -> None:
    clock = ManualClock()
    q: WorkQueue[None] = WorkQueue(clock=clock)
    q.add_after("a", 10.0)
    q.add_after("a", 3.0)
    q.add_after("a", 20.0)
    assert q.delayed == {"a": 3.0}
    clock.advance(2.9)
    assert q.try_get() is None
    clock.advance(0.2)
    assert q.try_get() == ("a", None)
    q.done("a")
    clock.advance(100.0)
    assert q.try_get() is None, "superseded delays must not add the key again"


# -- the async surface ---------------------------------------------------------------------------


async def test_serve_never_exceeds_the_worker_limit() -> None:
    q: WorkQueue[None] = WorkQueue()
    active: set[str] = set()
    peak = 0
    gate = asyncio.Event()
    processed: list[str] = []

    async def handler(key: str, _ctx: None) -> None:
        nonlocal peak
        active.add(key)
        peak = max(peak, len(active))
        await gate.wait()
        active.discard(key)
        processed.append(key)

    for i in range(12):
        q.add(f"default.p{i}")
    serving = asyncio.create_task(q.serve(handler, workers=3))
    await eventually(lambda: len(active) == 3, what="three workers busy")
    await asyncio.sleep(0)
    assert len(active) == 3 and len(q) == 9
    gate.set()
    await eventually(lambda: len(processed) == 12, what="all keys processed")
    assert peak == 3
    assert await q.shutdown(timeout=5)
    await asyncio.wait_for(serving, 5)


async def test_a_key_is_never_processed_concurrently_with_itself() -> None:
    q: WorkQueue[int] = WorkQueue()
    running: set[str] = set()
    overlaps: list[str] = []
    seen: list[tuple[str, int | None]] = []

    async def handler(key: str, ctx: int | None) -> None:
        if key in running:
            overlaps.append(key)
        running.add(key)
        seen.append((key, ctx))
        await asyncio.sleep(0.01)
        running.discard(key)

    serving = asyncio.create_task(q.serve(handler, workers=4))
    q.add("a", 1)
    await eventually(lambda: "a" in running, what="first run")
    for i in range(2, 6):
        q.add("a", i)
        await asyncio.sleep(0)
    await eventually(lambda: len(seen) == 2 and not running, what="the collapsed rerun")
    assert overlaps == []
    assert seen == [("a", 1), ("a", 5)]
    await q.shutdown(timeout=5)
    await asyncio.wait_for(serving, 5)


async def test_shutdown_waits_for_in_flight_work_and_stops_handing_out() -> None:
    q: WorkQueue[None] = WorkQueue()
    release = asyncio.Event()
    finished: list[str] = []

    async def handler(key: str, _ctx: None) -> None:
        await release.wait()
        finished.append(key)

    q.add("a")
    q.add("b")
    serving = asyncio.create_task(q.serve(handler, workers=1))
    await eventually(lambda: q.in_flight == {"a"}, what="a in flight")
    shutting = asyncio.create_task(q.shutdown(timeout=5))
    await asyncio.sleep(0.01)
    assert not shutting.done(), "shutdown returned while work was in flight"
    q.add("c")
    release.set()
    assert await shutting is True
    await asyncio.wait_for(serving, 5)
    assert finished == ["a"], "queued and late keys are dropped, in-flight work completes"
    with pytest.raises(ShutDown):
        await q.get()


async def test_shutdown_gives_up_after_its_timeout() -> None:
    q: WorkQueue[None] = WorkQueue()
    q.add("a")
    assert await q.get() == ("a", None)
    assert await q.shutdown(timeout=0.05) is False
    q.done("a")


# -- the controller -------------------------------------------------------------------------------


class Recorder:
    def __init__(self, outcomes: dict[str, list[object]] | None = None) -> None:
        self.calls: list[str] = []
        self.outcomes = outcomes or {}

    async def __call__(self, key: str, _ctx: object) -> float | None:
        self.calls.append(key)
        todo = self.outcomes.get(key)
        result = todo.pop(0) if todo else None
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[return-value]

    def count(self, key: str) -> int:
        return self.calls.count(key)


@pytest.fixture
async def running():
    """Start a controller; stop it at the end of the test."""
    started: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(c: Controller) -> Controller:
        stop = asyncio.Event()
        started.append((stop, asyncio.create_task(c.run(stop))))
        return c

    yield start
    for stop, task in started:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_requeue_after_reconciles_again_when_the_time_has_come(running) -> None:
    clock = ManualClock()
    rec = Recorder({"default.web": [30.0, None]})
    c = running(Controller("test", rec, resync_seconds=None, clock=clock))
    c.enqueue("default.web")
    await eventually(lambda: rec.count("default.web") == 1)
    await eventually(lambda: "default.web" in c.queue.delayed)
    assert c.queue.delayed["default.web"] == pytest.approx(30.0)
    clock.advance(29.0)
    await asyncio.sleep(0.02)
    assert rec.count("default.web") == 1
    clock.advance(1.0)
    await eventually(lambda: rec.count("default.web") == 2, what="the requeued reconcile")


@pytest.mark.parametrize(
    ("error", "delay"),
    [
        pytest.param(errors.Temporary("node busy", delay=7.0), 7.0, id="temporary-honours-its-delay"),
        pytest.param(errors.Conflict("revision moved"), 0.005, id="conflict-retries-almost-at-once"),
        pytest.param(RuntimeError("bug"), 0.005, id="other-errors-back-off"),
    ],
)
async def test_failures_are_retried_with_the_right_delay(running, error: Exception, delay: float) -> None:
    clock = ManualClock()
    rec = Recorder({"default.x": [error, None]})
    c = running(Controller("test", rec, resync_seconds=None, clock=clock))
    c.enqueue("default.x")
    await eventually(lambda: "default.x" in c.queue.delayed, what="the retry to be scheduled")
    assert c.queue.delayed["default.x"] == pytest.approx(delay)
    clock.advance(delay)
    await eventually(lambda: rec.count("default.x") == 2, what="the retry")
    await eventually(lambda: c.queue.num_requeues("default.x") == 0, what="forget after success")


async def test_repeated_failures_back_off_exponentially(running) -> None:
    clock = ManualClock()
    rec = Recorder({"default.x": [RuntimeError("1"), RuntimeError("2"), RuntimeError("3"), None]})
    c = running(Controller("test", rec, resync_seconds=None, clock=clock))
    c.enqueue("default.x")
    seen = []
    for n in range(3):
        await eventually(lambda n=n: rec.count("default.x") == n + 1 and "default.x" in c.queue.delayed)
        seen.append(c.queue.delayed["default.x"] - clock.now())
        clock.advance(seen[-1])
    await eventually(lambda: rec.count("default.x") == 4)
    assert seen == pytest.approx([0.005, 0.01, 0.02])


async def test_resync_enqueues_every_key_again(running) -> None:
    rec = Recorder()
    keys = ["default.a", "default.b"]
    running(Controller("test", rec, resync_seconds=0.05, keys=lambda: keys))
    await eventually(lambda: rec.count("default.a") >= 2 and rec.count("default.b") >= 2, what="two resyncs")


async def test_stop_lets_in_flight_reconciles_finish() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[str] = []

    async def reconcile(key: str, _ctx: object) -> None:
        started.set()
        await release.wait()
        finished.append(key)

    c = Controller("test", reconcile, resync_seconds=None)
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    c.enqueue("default.a")
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.sleep(0.01)
    assert not task.done()
    release.set()
    await asyncio.wait_for(task, 5)
    assert finished == ["default.a"]


async def test_stop_is_bounded_when_a_reconcile_hangs() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def reconcile(_key: str, _ctx: object) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    c = Controller("test", reconcile, resync_seconds=None, shutdown_timeout=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    c.enqueue("default.a")
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert cancelled.is_set()


async def test_a_controller_can_run_again_after_a_stop() -> None:
    """As when leadership is lost and won back: the second run starts with a full resync."""
    rec = Recorder()
    c = Controller("test", rec, resync_seconds=None, keys=lambda: ["default.a"])
    for expected in (1, 2):
        stop = asyncio.Event()
        task = asyncio.create_task(c.run(stop))
        await eventually(
            lambda expected=expected: rec.count("default.a") == expected, what="the initial resync"
        )
        c.enqueue("default.b")
        await eventually(lambda expected=expected: rec.count("default.b") == expected, what="an enqueued key")
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_cancelling_serve_ends_even_when_a_handler_swallows_the_cancellation():
    from kyb.workqueue import WorkQueue

    q: WorkQueue[None] = WorkQueue()
    started = asyncio.Event()

    async def stubborn(key, ctx):
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # what a library's wait_for may do on 3.11

    q.add("a")
    task = asyncio.create_task(q.serve(stubborn, workers=1))
    await started.wait()
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
    assert task.done()
