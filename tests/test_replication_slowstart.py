"""Slow start in the replication service's create path, with a recording in-memory store:
a template whose pods cannot be created costs one attempt, not replicas attempts, and the
expectations are given back so the next reconcile tries again."""

from __future__ import annotations

import datetime as _dt

import msgspec
import pytest

from kyb import errors
from schemas.apps import ReplicaSet
from services.replication.reconcile import Owner
from services.replication.service import Replication

NOW = _dt.datetime(2025, 1, 1, tzinfo=_dt.UTC)
KEY = "ReplicaSet/default.web"


class FakeStore:
    """Accepts ``room`` creates, then refuses every one like an admission quota would."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.attempts = 0
        self.events: list[tuple[str, str]] = []

    async def create(self, obj):
        self.attempts += 1
        if self.room <= 0:
            raise errors.Forbidden('pods "web-x" is forbidden: exceeded quota')
        self.room -= 1
        return obj

    async def record_event(self, obj, reason, message, type="Normal", source="", *, nc=None):
        self.events.append((reason, type))


class FakeNC:
    def jetstream(self, **_kw):
        return None


def web(replicas: int) -> ReplicaSet:
    return msgspec.convert(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
        ReplicaSet,
    )


@pytest.mark.parametrize(
    "room, attempts, created",
    [
        pytest.param(0, 1, 0, id="nothing-fits-one-attempt"),
        pytest.param(3, 7, 3, id="fails-in-third-batch"),
        pytest.param(50, 50, 50, id="all-fit"),
    ],
)
async def test_creates_stop_at_the_first_failing_batch(room, attempts, created):
    store = FakeStore(room)
    rep = Replication(FakeNC(), store)  # type: ignore[arg-type]
    obj = web(50)
    if room >= 50:
        await rep._create(KEY, obj, Owner.of(obj), 50, NOW)
    else:
        with pytest.raises(errors.Forbidden):
            await rep._create(KEY, obj, Owner.of(obj), 50, NOW)
    assert store.attempts == attempts
    assert [r for r, _ in store.events].count("SuccessfulCreate") == created
    assert ("FailedCreate", "Warning") in store.events or room >= 50
    # Only the creates that happened are still awaited from the watch.
    assert rep.expectations.pending(KEY) == (created, 0)
