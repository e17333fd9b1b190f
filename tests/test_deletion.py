"""kyb.deletion decides a delete as Kubernetes does: finalizers and running bound pods are
only marked (with the pod's grace period), a mark is never moved, grace 0 removes a pod at once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kyb import deletion
from schemas.meta import ObjectMeta
from schemas.pod import Pod, PodSpec, PodStatus

NOW = "2024-01-01T00:00:10Z"


@st.composite
def pods(draw):
    return Pod(
        metadata=ObjectMeta(name="p", namespace="default", resourceVersion="3",
                            finalizers=draw(st.lists(st.sampled_from(["a", "b"]), unique=True)),
                            deletionTimestamp=draw(st.sampled_from([None, "2024-01-01T00:00:00Z"]))),
        spec=PodSpec(nodeName=draw(st.sampled_from(["", "n1"])),
                     terminationGracePeriodSeconds=draw(st.sampled_from([None, 5]))),
        status=PodStatus(phase=draw(st.sampled_from(["Pending", "Running", "Succeeded"]))),
    )


@given(pods(), st.sampled_from([None, 0, 7]), st.lists(st.sampled_from(["orphan", "a"]), max_size=2))
def test_marks_and_removals(pod, grace, extra) -> None:
    out = deletion.decide("Pod", pod, grace, extra, NOW)
    running_on_node = pod.spec.nodeName and pod.status.phase != "Succeeded"
    if pod.metadata.finalizers or extra or (running_on_node and grace != 0):
        assert out.marked is not None
        assert out.marked.metadata.deletionTimestamp == (pod.metadata.deletionTimestamp or NOW)
        assert set(pod.metadata.finalizers) | set(extra) == set(out.marked.metadata.finalizers)
    if not pod.metadata.finalizers and not extra and (not pod.spec.nodeName or grace == 0):
        assert out.marked is None  # removed at once


def test_grace_comes_from_the_request_then_the_pod_then_thirty() -> None:
    pod = Pod(metadata=ObjectMeta(name="p", resourceVersion="1"), spec=PodSpec(nodeName="n1"),
              status=PodStatus(phase="Running"))
    assert deletion.decide("Pod", pod, None, (), NOW).marked.metadata.deletionGracePeriodSeconds == 30
    assert deletion.decide("Pod", pod, 7, (), NOW).marked.metadata.deletionGracePeriodSeconds == 7
    own = Pod(metadata=pod.metadata, spec=PodSpec(nodeName="n1", terminationGracePeriodSeconds=5), status=pod.status)
    assert deletion.decide("Pod", own, None, (), NOW).marked.metadata.deletionGracePeriodSeconds == 5
    assert deletion.decide("ConfigMap", pod, None, (), NOW).marked is None  # only pods wait for a kubelet
