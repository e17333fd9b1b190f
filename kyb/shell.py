"""The async shell a controller service is built on: the part every workload controller wrote
the same way.

A ``ControllerShell`` holds the store, the clock, the settings, the informers and the
``Controller`` that reconciles the keys of its primary kind (every change to a primary object
enqueues its own key; ``watch`` adds the informers of the kinds it reads, with the handler that
maps their objects to primary keys). ``start`` and ``stop`` start and stop the informers together (what
``run_as_leader`` drives). For controllers that create and delete pods it keeps the
``Expectations`` (``caught_up`` before planning, ``expect`` after writing), and ``create`` /
``delete`` write one object and record the owner's event, answering the name written or None
when the write had nothing to do (AlreadyExists, NotFound). Events are best effort: a failure
to record one never fails the reconcile.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar

from opentelemetry.context import Context

from kyb import errors
from kyb.controller import Controller
from kyb.expectations import Expectations
from kyb.informer import Informer, start_all, stop_all
from kyb.store import Store, split_key
from schemas.helpers import object_key
from schemas.meta import Object

__all__ = ["ControllerShell"]

EXPECTATION_TIMEOUT = 30.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ControllerShell:
    """Store, clock, settings, informers and controller of one controller service.

    A subclass names its primary ``kind``, its controller ``name``, its events' ``source`` and
    the type of its ``settings`` (none by default) as class arguments
    (``class JobController(ControllerShell, kind="Job", name="job", source=...)``), adds the
    informers it reads in ``wire`` and defines ``reconcile(key, ctx)``.
    """

    kind: ClassVar[str]
    name: ClassVar[str]
    source: ClassVar[str]
    settings_type: ClassVar[Callable[[], Any] | None] = None
    resync_seconds: ClassVar[float | None] = 60

    def __init_subclass__(
        cls,
        *,
        kind: str,
        name: str,
        source: str,
        settings: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind, cls.name, cls.source, cls.settings_type = kind, name, source, settings

    def __init__(
        self,
        nc: Any,
        store: Store,
        *,
        settings: Any = None,
        workers: int = 4,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        if settings is None and self.settings_type is not None:
            settings = self.settings_type()
        self.settings = settings
        self.clock = clock or _utcnow
        self.informers: list[Informer] = []
        self.expectations = Expectations(EXPECTATION_TIMEOUT)
        self.controller = Controller(
            self.name, self.reconcile, workers=workers, keys=self._keys, resync_seconds=self.resync_seconds
        )
        self.primary = self.watch(Informer(nc, self.kind), lambda obj: [object_key(obj)])
        self.wire(nc)

    def wire(self, nc: Any) -> None:
        """Make (with ``watch``) the informers of the kinds the controller reads besides its own."""

    def _keys(self) -> Iterable[str]:
        return self.primary.keys()

    def watch(self, informer: Informer, keys_of: Callable[[Any], Iterable[str]] | None = None) -> Informer:
        """Start and stop ``informer`` with the others; with ``keys_of``, its changes enqueue
        the primary keys it names. Returns ``informer``."""
        self.informers.append(informer)
        if keys_of is not None:
            informer.add_handler(self.controller.handler(keys_of))
        return informer

    async def start(self) -> None:
        await start_all(self.informers)

    async def stop(self) -> None:
        await stop_all(self.informers)

    async def reconcile(self, key: str, _ctx: Context | None = None) -> float | None:
        raise NotImplementedError

    # -- expectations ---------------------------------------------------------------------------

    def caught_up(self, key: str, pods: Informer) -> bool:
        """Whether the pod cache shows every create and delete made for ``key`` (or they
        timed out): only then may ``key`` be planned again."""
        ns, _name = split_key(key)
        self.expectations.settle(key, lambda pod_name: pods.get_by_name(ns, pod_name))
        return self.expectations.satisfied(key, time.monotonic())

    def expect(self, key: str, *, creating: Iterable[str] = (), deleting: Iterable[str] = ()) -> None:
        self.expectations.expect(key, time.monotonic(), creating=creating, deleting=deleting)

    # -- writes ---------------------------------------------------------------------------------

    async def create(self, owner: Object, obj: Object, message: Callable[[Object], str]) -> str | None:
        """Create ``obj`` and record ``SuccessfulCreate`` on ``owner`` with ``message(created)``;
        the created name, or None if it already existed."""
        try:
            created = await self.store.create(obj)
        except errors.AlreadyExists:
            return None
        await self.event(owner, "SuccessfulCreate", message(created))
        return created.metadata.name

    async def delete(self, owner: Object, kind: str, name: str, message: str) -> str | None:
        """Delete ``kind`` ``name`` in the owner's namespace and record ``SuccessfulDelete``;
        ``name``, or None if it was already gone."""
        try:
            await self.store.delete(kind, owner.metadata.namespace, name)
        except errors.NotFound:
            return None
        await self.event(owner, "SuccessfulDelete", message)
        return name

    async def event(self, obj: Object, reason: str, message: str, type_: str = "Normal") -> None:
        with contextlib.suppress(Exception):
            await self.store.record_event(obj, reason, message, type_, self.source)
