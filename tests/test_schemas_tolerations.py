"""Kubernetes' ToleratesTaint, once for every controller: the documented cases, and the
scheduler's value types, the node lifecycle controller and the DaemonSet controller agree with it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import tolerations
from schemas.core import Taint
from schemas.pod import Toleration
from services.scheduler import plan as scheduler_plan


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        pytest.param(Toleration(operator="Exists"), Taint(key="any", value="x", effect="NoExecute"), True,
                     id="empty-key-exists-tolerates-everything"),
        pytest.param(Toleration(key="k", operator="Exists"), Taint(key="k", value="x", effect="NoSchedule"), True,
                     id="exists-ignores-value"),
        pytest.param(Toleration(key="k", value="v"), Taint(key="k", value="v", effect="NoSchedule"), True,
                     id="equal-is-the-default-operator"),
        pytest.param(Toleration(key="k", value="v"), Taint(key="k", value="w", effect="NoSchedule"), False,
                     id="equal-needs-the-value"),
        pytest.param(Toleration(key="k", operator="Exists", effect="NoSchedule"), Taint(key="k", effect="NoExecute"),
                     False, id="effect-must-match-when-set"),
        pytest.param(Toleration(key="k", operator="Exists"), Taint(key="k", effect="PreferNoSchedule"), True,
                     id="empty-effect-matches-every-effect"),
        pytest.param(Toleration(key="k", operator="Exists"), Taint(key="other", effect="NoSchedule"), False,
                     id="key-must-match-when-set"),
        pytest.param(Toleration(key="k", operator="Exists", tolerationSeconds=0), Taint(key="k", effect="NoExecute"),
                     True, id="toleration-seconds-do-not-change-matching"),
    ],
)
def test_documented_cases(toleration, taint, expected) -> None:
    assert tolerations.tolerates(toleration, taint) is expected


keys = st.sampled_from(["", "a", "b"])
effects = st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"])
toleration_st = st.builds(Toleration, key=keys, operator=st.sampled_from(["Exists", "Equal"]),
                          value=st.sampled_from(["", "x", "y"]), effect=st.sampled_from(["", "NoSchedule", "NoExecute"]))
taint_st = st.builds(Taint, key=st.sampled_from(["a", "b"]), value=st.sampled_from(["", "x", "y"]), effect=effects)


@given(tols=st.lists(toleration_st, max_size=4), taint=taint_st)
def test_the_scheduler_types_agree(tols, taint) -> None:
    ours = [scheduler_plan.Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in tols]
    request = scheduler_plan.PodRequest(key="ns.p", tolerations=tuple(ours))
    their_taint = scheduler_plan.Taint(key=taint.key, value=taint.value, effect=taint.effect)
    assert request.tolerates(their_taint) == tolerations.tolerated(tols, taint)
