"""The rollout commands' wording and their edits, as pure functions (kubectl's messages, undo
copying a ReplicaSet's template back, set image), and their refusals against a live api."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb.cli.rollout import RolloutFailed, history_table, set_images, status_message, undo_onto
from tests.test_deployment_service import cluster, deployment  # noqa: F401  (fixture)


def dep(replicas=3, generation=2, observed=2, updated=3, total=3, available=3, progressing=None) -> dict:
    conds = [{"type": "Progressing", "status": "True", "reason": progressing}] if progressing else []
    return {
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                   "availableReplicas": available, "conditions": conds},
    }


@pytest.mark.parametrize(
    ("d", "message", "done"),
    [
        pytest.param(dep(observed=1), "Waiting for deployment spec update to be observed...", False, id="not-observed"),
        pytest.param(dep(updated=1), 'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...', False, id="updating"),
        pytest.param(dep(total=5), 'Waiting for deployment "web" rollout to finish: 2 old replicas are pending termination...', False, id="old-pending"),
        pytest.param(dep(available=1), 'Waiting for deployment "web" rollout to finish: 1 of 3 updated replicas are available...', False, id="availability"),
        pytest.param(dep(), 'deployment "web" successfully rolled out', True, id="done"),
    ],
)
def test_status_messages_are_kubectls(d, message, done):
    assert status_message(d) == (message, done)


def test_status_past_the_deadline_fails():
    with pytest.raises(RolloutFailed, match='deployment "web" exceeded its progress deadline'):
        status_message(dep(updated=1, progressing="ProgressDeadlineExceeded"))


@given(replicas=st.integers(0, 50), updated=st.integers(0, 60), total=st.integers(0, 60), available=st.integers(0, 60))
def test_only_a_finished_rollout_is_reported_done(replicas, updated, total, available):
    _, done = status_message(dep(replicas=replicas, updated=updated, total=total, available=available))
    assert done == (updated >= replicas and total <= updated and available >= updated)


def test_history_lists_revisions_in_order_with_change_causes():
    rss = [{"metadata": {"annotations": {"deployment.kubernetes.io/revision": r, **extra}}}
           for r, extra in (("2", {"kubernetes.io/change-cause": "kyb set image app=img:2"}), ("1", {}))]
    lines = history_table(rss).splitlines()
    assert lines[0].split() == ["REVISION", "CHANGE-CAUSE"]
    assert lines[1].split() == ["1", "<none>"] and lines[2].split(None, 1) == ["2", "kyb set image app=img:2"]


def test_undo_copies_the_template_without_the_hash_label():
    d = deployment(image="img:3")
    d["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "3"}
    rs = {"metadata": {"annotations": {"deployment.kubernetes.io/revision": "1", "kubernetes.io/change-cause": "first"}},
          "spec": {"template": copy.deepcopy(deployment(image="img:1")["spec"]["template"])}}
    rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] = "abc"
    out = undo_onto(d, rs)
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "img:1"
    assert "pod-template-hash" not in out["spec"]["template"]["metadata"]["labels"]
    assert out["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "3", "kubernetes.io/change-cause": "first"}
    assert "pod-template-hash" in rs["spec"]["template"]["metadata"]["labels"]  # input untouched


def test_set_image_by_name_or_star_and_unknown_containers_reported():
    d = deployment()
    assert set_images(d, {"app": "img:9"}) == []
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "img:9"
    assert set_images(d, {"*": "img:10", "nope": "x"}) == ["nope"]
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "img:10"


async def test_commands_refuse_what_kubectl_refuses(cluster):  # noqa: F811
    await cluster.api.apply(deployment(replicas=1))
    await cluster.rolled_out()
    code, out = await cluster.kyb("rollout", "undo", "deploy/web")
    assert code == 1 and "no rollout history found" in out, out
    code, out = await cluster.kyb("rollout", "history", "deploy/web", "--revision", "7")
    assert code == 1 and "unable to find the specified revision 7" in out
    code, out = await cluster.kyb("set", "image", "deploy/web", "nope=img:2")
    assert code == 1 and 'unable to find container named "nope"' in out
    code, out = await cluster.kyb("rollout", "resume", "deploy/web")
    assert code == 1 and "is not paused" in out
    code, out = await cluster.kyb("rollout", "pause", "deploy/web")
    assert code == 0
    code, out = await cluster.kyb("rollout", "undo", "deploy/web", "--to-revision", "1")
    assert code == 1 and "cannot rollback a paused deployment" in out
    code, out = await cluster.kyb("rollout", "status", "deploy/missing")
    assert code == 1 and 'deployments.apps "missing" not found' in out or "not found" in out
    code, out = await cluster.kyb("rollout", "status", "pods/x")
    assert code != 0 and "deployments only" in out
