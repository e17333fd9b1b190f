"""``kyb rollout status`` and ``kyb get`` for StatefulSets as pure functions: kubectl's
StatefulSetStatusViewer wording and the READY column."""

from __future__ import annotations

import datetime as dt

import pytest

from kyb.cli.printers import table
from kyb.cli.rollout import RolloutFailed, statefulset_status_message


def sts(replicas=3, ready=3, updated=3, partition: int | None = 0, strategy="RollingUpdate", generation=2,
        observed=2, current="web-a", update="web-a") -> dict:
    ustrat: dict = {"type": strategy}
    if partition is not None:
        ustrat["rollingUpdate"] = {"partition": partition}
    return {"metadata": {"name": "web", "generation": generation, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": replicas, "updateStrategy": ustrat},
            "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated,
                       "currentReplicas": updated, "currentRevision": current, "updateRevision": update}}


@pytest.mark.parametrize(("s", "message", "done"), [
    pytest.param(sts(observed=1), "Waiting for statefulset spec update to be observed...", False, id="not-observed"),
    pytest.param(sts(ready=1), "Waiting for 2 pods to be ready...", False, id="ready"),
    pytest.param(sts(updated=1), "Waiting for partitioned roll out to finish: 1 out of 3 new pods have been updated...",
                 False, id="updating"),
    pytest.param(sts(updated=1, partition=2), "partitioned roll out complete: 1 new pods have been updated...", True,
                 id="partitioned"),
    pytest.param(sts(), "partitioned roll out complete: 3 new pods have been updated...", True, id="done"),
    pytest.param(sts(partition=None, current="web-a", update="web-b"),
                 "waiting for statefulset rolling update to complete 3 pods at revision web-b...", False, id="revision"),
])
def test_status_messages_are_kubectls(s, message, done):
    assert statefulset_status_message(s) == (message, done)


def test_on_delete_has_no_rollout_status():
    with pytest.raises(RolloutFailed, match="only available for RollingUpdate"):
        statefulset_status_message(sts(strategy="OnDelete", partition=None))


def test_get_columns():
    head, rows = table("StatefulSet", [sts(ready=2)], dt.datetime(2024, 1, 1, 0, 5, tzinfo=dt.UTC))
    assert head == ["NAME", "READY", "AGE"] and rows == [["web", "2/3", "5m"]]
