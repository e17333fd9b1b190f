"""``kyb rollout`` for DaemonSets as pure functions: kubectl's DaemonSetStatusViewer wording,
the history table from ControllerRevisions, which revision undo picks and what it writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb.cli.rollout import (
    RolloutFailed,
    daemonset_status_message,
    find_revision,
    restore_revision,
    revisions_table,
    same_template,
)


def ds(desired=3, updated=3, available=3, generation=2, observed=2, strategy="RollingUpdate") -> dict:
    return {
        "metadata": {"name": "agent", "generation": generation},
        "spec": {"updateStrategy": {"type": strategy}, "template": template("agent:2")},
        "status": {"observedGeneration": observed, "desiredNumberScheduled": desired,
                   "updatedNumberScheduled": updated, "numberAvailable": available},
    }


def template(image: str) -> dict:
    return {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": image}]}}


def rev(number: int, image: str, cause: str | None = None) -> dict:
    meta: dict = {"name": f"agent-{number}"}
    if cause:
        meta["annotations"] = {"kubernetes.io/change-cause": cause}
    return {"metadata": meta, "revision": number, "data": {"spec": {"template": template(image)}}}


@pytest.mark.parametrize(
    ("d", "message", "done"),
    [
        pytest.param(ds(observed=1), "Waiting for daemon set spec update to be observed...", False, id="not-observed"),
        pytest.param(ds(updated=1), 'Waiting for daemon set "agent" rollout to finish: 1 out of 3 new pods have been updated...', False, id="updating"),
        pytest.param(ds(available=2), 'Waiting for daemon set "agent" rollout to finish: 2 of 3 updated pods are available...', False, id="availability"),
        pytest.param(ds(), 'daemon set "agent" successfully rolled out', True, id="done"),
        pytest.param(ds(desired=0, updated=0, available=0), 'daemon set "agent" successfully rolled out', True, id="no-nodes"),
    ],
)
def test_status_messages_are_kubectls(d, message, done):
    assert daemonset_status_message(d) == (message, done)


def test_on_delete_has_no_rollout_status():
    with pytest.raises(RolloutFailed, match="rollout status is only available for RollingUpdate strategy type"):
        daemonset_status_message(ds(strategy="OnDelete"))


@given(desired=st.integers(0, 50), updated=st.integers(0, 60), available=st.integers(0, 60), observed=st.integers(0, 3))
def test_only_an_observed_fully_updated_and_available_daemonset_is_done(desired, updated, available, observed):
    _, done = daemonset_status_message(ds(desired=desired, updated=updated, available=available, observed=observed))
    assert done == (observed >= 2 and updated >= desired and available >= desired)


def test_history_lists_revisions_in_order_with_change_causes():
    lines = revisions_table([rev(3, "agent:3", "set image agent:3"), rev(1, "agent:1")]).splitlines()
    assert lines[0].split() == ["REVISION", "CHANGE-CAUSE"]
    assert lines[1].split() == ["1", "<none>"] and lines[2].split(None, 1) == ["3", "set image agent:3"]


@given(numbers=st.lists(st.integers(1, 30), min_size=0, max_size=8, unique=True), wanted=st.integers(0, 30))
def test_undo_goes_to_the_named_revision_or_the_one_before_the_latest(numbers, wanted):
    revs = [rev(n, f"agent:{n}") for n in numbers]
    found = find_revision(revs, wanted)
    if wanted == 0:
        expected = sorted(numbers)[-2] if len(numbers) > 1 else None
    else:
        expected = wanted if wanted in numbers else None
    assert (found["revision"] if found else None) == expected


def test_undo_writes_the_revisions_template_and_nothing_else():
    current = ds()
    out = restore_revision(current, rev(1, "agent:1"))
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "agent:1"
    assert out["spec"]["updateStrategy"] == current["spec"]["updateStrategy"] and "status" not in out
    assert current["spec"]["template"]["spec"]["containers"][0]["image"] == "agent:2"  # input untouched


def test_templates_compare_with_defaults_spelled_out_or_left_out():
    full = template("agent:1")
    full["metadata"]["name"] = ""
    full["spec"]["containers"][0]["workingDir"] = ""
    assert same_template(template("agent:1"), full)
    assert not same_template(template("agent:1"), template("agent:2"))


def test_rollout_status_timeout_takes_a_duration_and_names_a_bad_one():
    from click.testing import CliRunner

    from kyb.cli.main import cli

    result = CliRunner().invoke(cli, ["--nats", "nats://127.0.0.1:1", "rollout", "status", "ds/agent", "--timeout", "5x"])
    assert result.exit_code == 2
    assert "'5x' is not a duration" in result.output
