"""Helpers services share: KV keys, pod readiness and requests, owners, times."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.apps import Deployment
from schemas.core import Namespace, Node
from schemas.helpers import (
    controller_of,
    format_micro_time,
    format_time,
    now_rfc3339,
    object_key,
    owner_reference,
    parse_time,
    pod_is_available,
    pod_is_ready,
    pod_requests,
    split_key,
)
from schemas.meta import ObjectMeta, OwnerReference
from schemas.pod import Container, Pod, PodCondition, PodSpec, PodStatus, ResourceRequirements
from schemas.quantity import cpu_millis, to_bytes

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def test_object_keys() -> None:
    assert object_key(Pod(metadata=ObjectMeta(name="web", namespace="prod"))) == "prod.web"
    assert object_key(Pod(metadata=ObjectMeta(name="web"))) == "default.web"
    assert object_key(Node(metadata=ObjectMeta(name="n1.example.com"))) == "_.n1.example.com"
    assert object_key(Namespace(metadata=ObjectMeta(name="prod"))) == "_.prod"
    assert split_key("prod.web") == ("prod", "web")
    assert split_key("_.n1.example.com") == (None, "n1.example.com")


def _ready(status: str, since: str | None = None) -> Pod:
    cond = PodCondition(type="Ready", status=status, lastTransitionTime=since)  # type: ignore[arg-type]
    return Pod(metadata=ObjectMeta(name="p"), status=PodStatus(phase="Running", conditions=[cond]))


def test_pod_readiness_and_availability() -> None:
    assert pod_is_ready(_ready("True"))
    assert not pod_is_ready(_ready("False"))
    assert not pod_is_ready(Pod(metadata=ObjectMeta(name="p")))
    pod = _ready("True", "2024-01-01T00:00:00Z")
    assert pod_is_available(pod, 0, T0)
    assert not pod_is_available(pod, 10, T0 + dt.timedelta(seconds=9))
    assert pod_is_available(pod, 10, T0 + dt.timedelta(seconds=10))


def _c(name: str, cpu: str | None = None, mem: str | None = None) -> Container:
    req = {k: v for k, v in (("cpu", cpu), ("memory", mem)) if v is not None}
    return Container(name=name, image="x", resources=ResourceRequirements(requests=req))


def test_pod_requests_take_the_larger_of_init_and_app_sums() -> None:
    pod = Pod(metadata=ObjectMeta(name="p"), spec=PodSpec(
        containers=[_c("a", "100m", "64Mi"), _c("b", "250m"), _c("c")],
        initContainers=[_c("i1", "500m", "32Mi"), _c("i2", "50m", "1Gi")]))
    assert pod_requests(pod) == (500, 1024**3)
    assert pod_requests(Pod(metadata=ObjectMeta(name="p"), spec=PodSpec(containers=[_c("a")]))) == (0, 0)


def test_pod_requests_count_sidecars_and_default_requests_to_limits() -> None:
    """Kubernetes' PodRequests: a sidecar (restartPolicy Always) adds to the app sum and to the
    init containers after it; an unset request is the container's limit."""
    sidecar = msgspec.structs.replace(_c("proxy", "50m", "16Mi"), restartPolicy="Always")
    late = _c("migrate", "200m", "8Mi")
    pod = Pod(metadata=ObjectMeta(name="p"), spec=PodSpec(containers=[_c("app", "100m", "64Mi")],
                                                         initContainers=[_c("early", "300m"), sidecar, late]))
    assert pod_requests(pod) == (300, 80 * 1024**2)  # early alone: 300m; apps + sidecar: 80Mi
    pod = msgspec.structs.replace(pod, spec=msgspec.structs.replace(pod.spec, initContainers=[sidecar, late]))
    assert pod_requests(pod) == (250, 80 * 1024**2)  # migrate beside the sidecar: 250m
    limited = Container(name="l", image="x", resources=ResourceRequirements(limits={"cpu": "1", "memory": "1Gi"}))
    assert pod_requests(Pod(metadata=ObjectMeta(name="p"), spec=PodSpec(containers=[limited]))) == (1000, 1024**3)


quantities = st.sampled_from(["0", "1m", "100m", "0.5", "2", "1Mi", "64Mi", "1G", "500k"])


@given(st.lists(st.tuples(quantities, quantities), min_size=1, max_size=4),
       st.lists(st.tuples(quantities, quantities), max_size=3))
def test_pod_requests_property(apps: list[tuple[str, str]], inits: list[tuple[str, str]]) -> None:
    pod = Pod(metadata=ObjectMeta(name="p"), spec=PodSpec(
        containers=[_c(f"a{i}", c, m) for i, (c, m) in enumerate(apps)],
        initContainers=[_c(f"i{i}", c, m) for i, (c, m) in enumerate(inits)]))
    cpu, mem = pod_requests(pod)
    assert cpu >= sum(cpu_millis(c) for c, _ in apps)
    assert mem >= sum(to_bytes(m) for _, m in apps)
    assert all(cpu >= cpu_millis(c) and mem >= to_bytes(m) for c, m in inits)
    assert cpu in {sum(cpu_millis(c) for c, _ in apps), *(cpu_millis(c) for c, _ in inits)}


def test_controller_of_and_owner_reference() -> None:
    d = Deployment(metadata=ObjectMeta(name="web", namespace="prod", uid="u-1"))
    ref = owner_reference(d)
    assert (ref.kind, ref.apiVersion, ref.name, ref.uid, ref.controller) == ("Deployment", "apps/v1", "web", "u-1", True)
    other = OwnerReference(apiVersion="v1", kind="ConfigMap", name="c", uid="u-2")
    pod = Pod(metadata=ObjectMeta(name="p", ownerReferences=[other, ref]))
    assert controller_of(pod) == ref
    assert controller_of(Pod(metadata=ObjectMeta(name="p", ownerReferences=[other]))) is None


def test_time_formats() -> None:
    assert now_rfc3339(T0) == "2024-01-01T00:00:00Z"
    assert format_time(dt.datetime(2024, 1, 1, 2, 0, 0, 999, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == \
        "2024-01-01T00:00:00Z"
    assert format_micro_time(T0 + dt.timedelta(microseconds=5)) == "2024-01-01T00:00:00.000005Z"
    assert parse_time("2024-01-01T00:00:00Z") == T0
    with pytest.raises(ValueError):
        parse_time("yesterday")


@given(st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9000, 1, 1), timezones=st.just(dt.UTC)))
def test_time_round_trip(t: dt.datetime) -> None:
    assert parse_time(format_time(t)) == t.replace(microsecond=0)
    assert parse_time(format_micro_time(t)) == t


def test_generated_names_use_kubernetes_safe_alphabet() -> None:
    from schemas.names import SAFE_ALPHABET, generated_name, safe_encode

    name = generated_name("web-")
    assert name.startswith("web-") and len(name) == len("web-") + 5
    assert set(name[4:]) <= set(SAFE_ALPHABET)
    assert not set("aeiou013") & set(SAFE_ALPHABET)
    assert generated_name("x-", lambda alphabet, k: alphabet[:k]) == "x-bcdfg"
    assert safe_encode("12") == SAFE_ALPHABET[ord("1") % 27] + SAFE_ALPHABET[ord("2") % 27]
