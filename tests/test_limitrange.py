"""LimitRange (v1) and Kubernetes' LimitRanger admission of new pods: the LimitRange defaults and
validation, the admission as a pure rule (defaults, Container and Pod bounds, ratios, refusals
naming the field), `kyb get limits`' columns, and on a real nats-server the same admission on
pods from manifests (the api) and from controllers (Store.create)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kyb import errors
from kyb.cli import printers
from schemas.limitrange import ANNOTATION, LimitRange, LimitRefused, keep_defaults, pod_totals, with_limits
from schemas.pod import Pod
from schemas.validation import SchemaError, decode
from tests.cluster import wait_for


def lr_manifest(name: str = "limits", namespace: str = "default", *items: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": name, "namespace": namespace},
            "spec": {"limits": list(items)}}


def lr(*items: dict[str, Any]) -> LimitRange:
    made = decode(lr_manifest("limits", "default", *items))
    assert isinstance(made, LimitRange)
    return made


def container(name: str = "c", requests: dict[str, str] | None = None, limits: dict[str, str] | None = None
              ) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    return {"name": name, "image": "busybox", **({"resources": res} if res else {})}


def pod_manifest(name: str = "p", *containers: dict[str, Any], init: list[dict[str, Any]] | None = None
                 ) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers) or [container()]}
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def pod(name: str = "p", *containers: dict[str, Any], **kw: Any) -> Pod:
    return msgspec.convert(pod_manifest(name, *containers, **kw), Pod)


# --- the LimitRange itself ---------------------------------------------------------------------


def test_container_defaults_come_from_max_default_and_min():
    made = lr({"type": "Container", "max": {"cpu": "2", "memory": "1Gi"}, "min": {"cpu": "100m", "memory": "64Mi"},
               "default": {"cpu": "500m"}, "defaultRequest": {"memory": "128Mi"}})
    item = made.spec.limits[0]
    assert item.default == {"cpu": "500m", "memory": "1Gi"}  # the max where no default is given
    assert item.defaultRequest == {"cpu": "500m", "memory": "128Mi"}  # the default limit, else the min
    only_min = lr({"type": "Container", "min": {"cpu": "100m"}}).spec.limits[0]
    assert (only_min.default, only_min.defaultRequest) == ({}, {"cpu": "100m"})
    pod_item = lr({"type": "Pod", "max": {"cpu": "4"}}).spec.limits[0]
    assert (pod_item.default, pod_item.defaultRequest) == ({}, {})


@pytest.mark.parametrize(
    ("items", "want"),
    [
        pytest.param([{"type": "Pod", "min": {"cpu": "2"}, "max": {"cpu": "1"}}],
                     [("spec.limits[0].min[cpu]", 'Invalid value: "2": min value 2 is greater than max value 1')],
                     id="min-over-max"),
        pytest.param([{"type": "Container", "max": {"cpu": "1"}, "default": {"cpu": "2"}}],
                     [("spec.limits[0].defaultRequest[cpu]",
                       'Invalid value: "2": default request value 2 is greater than max value 1'),
                      ("spec.limits[0].default[cpu]", 'Invalid value: "1": default value 2 is greater than max value 1')],
                     id="default-over-max"),
        pytest.param([{"type": "Container", "default": {"cpu": "1"}, "defaultRequest": {"cpu": "2"}}],
                     [("spec.limits[0].defaultRequest[cpu]",
                       'Invalid value: "2": default request value 2 is greater than default limit value 1')],
                     id="request-over-limit"),
        pytest.param([{"type": "Pod", "max": {"cpu": "1"}, "default": {"cpu": "1"}}],
                     [("spec.limits[0].default", "Forbidden: may not be specified when `type` is 'Pod'")],
                     id="pod-default"),
        pytest.param([{"type": "Container", "maxLimitRequestRatio": {"cpu": "500m"}}],
                     [("spec.limits[0].maxLimitRequestRatio[cpu]", 'Invalid value: "500m": ratio 500m is less than 1')],
                     id="ratio-under-one"),
        pytest.param([{"type": "Container", "max": {"cpu": "1"}}, {"type": "Container", "min": {"cpu": "1m"}}],
                     [("spec.limits[1].type", 'Duplicate value: "Container"')], id="duplicate-type"),
        pytest.param([{"type": "PersistentVolumeClaim", "max": {"cpu": "1"}}],
                     [("spec.limits[0].limits", "Required value: either minimum or maximum storage value is "
                                                "required, but neither was provided")], id="pvc-storage"),
        pytest.param([{"type": "Pod", "max": {"cpu": "lots"}}],
                     [("spec.limits[0].max[cpu]", "quantities must match the regular expression "
                                                  "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': \"lots\"")],
                     id="not-a-quantity"),
    ],
)
def test_bad_limit_ranges_are_refused_naming_the_field(items, want):
    with pytest.raises(SchemaError) as raised:
        decode(lr_manifest("limits", "default", *items))
    assert raised.value.details == want


def test_an_unknown_type_is_refused():
    with pytest.raises(SchemaError) as raised:
        decode(lr_manifest("limits", "default", {"type": "Node"}))
    assert raised.value.details[0][0] == "spec.limits[0].type"


# --- LimitRanger admission -----------------------------------------------------------------------


CONTAINER_LIMITS = {"type": "Container", "max": {"cpu": "1", "memory": "512Mi"}, "min": {"cpu": "50m"},
                    "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}


def test_defaults_fill_what_a_container_does_not_set_and_are_recorded():
    got = with_limits(pod("p", container("a"), container("b", requests={"cpu": "200m"}, limits={"memory": "300Mi"})),
                      [lr(CONTAINER_LIMITS)])
    a, b = got.spec.containers
    assert (a.resources.requests, a.resources.limits) == ({"cpu": "100m", "memory": "128Mi"},
                                                          {"cpu": "500m", "memory": "256Mi"})
    assert (b.resources.requests, b.resources.limits) == ({"cpu": "200m", "memory": "128Mi"},
                                                          {"cpu": "500m", "memory": "300Mi"})
    assert got.metadata.annotations[ANNOTATION] == (
        "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a; "
        "memory request for container b; cpu limit for container b")
    full = pod("q", container("a", requests={"cpu": "100m", "memory": "1Mi"}, limits={"cpu": "1", "memory": "2Mi"}))
    assert with_limits(full, [lr(CONTAINER_LIMITS)]) == full  # nothing to set, nothing out of bounds
    assert with_limits(full, []) == full


@pytest.mark.parametrize(
    ("items", "p", "want"),
    [
        pytest.param([CONTAINER_LIMITS], pod("p", container("a", limits={"cpu": "2"})),
                     [("spec.containers[0].resources.limits[cpu]",
                       "maximum cpu usage per Container is 1, but limit is 2")], id="over-max"),
        pytest.param([CONTAINER_LIMITS], pod("p", container("a", requests={"cpu": "10m"})),
                     [("spec.containers[0].resources.requests[cpu]",
                       "minimum cpu usage per Container is 50m, but request is 10m")], id="under-min"),
        pytest.param([{"type": "Container", "max": {"cpu": "1"}}],
                     pod("p", container("a"), init=[container("i", limits={"cpu": "3"})]),
                     [("spec.initContainers[0].resources.limits[cpu]",
                       "maximum cpu usage per Container is 1, but limit is 3")], id="init-container"),
        pytest.param([{"type": "Container", "maxLimitRequestRatio": {"memory": "2"}}],
                     pod("p", container("a", requests={"memory": "100Mi"}, limits={"memory": "300Mi"})),
                     [("spec.containers[0].resources.limits[memory]",
                       "memory max limit to request ratio per Container is 2, but provided ratio is 3.000000")],
                     id="ratio"),
        pytest.param([{"type": "Pod", "max": {"cpu": "1"}}],
                     pod("p", container("a", requests={"cpu": "600m"}, limits={"cpu": "600m"}),
                         container("b", requests={"cpu": "600m"}, limits={"cpu": "600m"})),
                     [("spec.limits[cpu]", "maximum cpu usage per Pod is 1, but limit is 1200m")], id="pod-sum"),
        pytest.param([{"type": "Pod", "min": {"memory": "1Mi"}}], pod("p", container("a")),
                     [("spec.requests[memory]", "minimum memory usage per Pod is 1Mi.  No request is specified")],
                     id="pod-min-unset"),
    ],
)
def test_pods_out_of_bounds_are_refused_naming_the_field(items, p, want):
    with pytest.raises(LimitRefused) as raised:
        with_limits(p, [lr(*items)])
    assert raised.value.problems == want and raised.value.forbidden


def test_pod_sums_count_sidecars_as_kubernetes_does():
    def c(name: str, cpu: str, **kw: Any) -> dict[str, Any]:
        return {**container(name, requests={"cpu": cpu}), **kw}

    # app 100m + sidecar 200m keep running: 300m; the init sequence peaks at the sidecar beside i2: 650m
    p = pod("p", c("a", "100m"), init=[c("i1", "500m"), c("s1", "200m", restartPolicy="Always"), c("i2", "450m")])
    assert pod_totals(p) == ({"cpu": "650m"}, {})
    late = pod("q", c("a", "900m"), init=[c("i1", "500m"), c("s1", "200m", restartPolicy="Always")])
    assert pod_totals(late) == ({"cpu": "1100m"}, {})  # a sidecar adds to the app containers


def test_a_default_limit_under_the_containers_request_makes_the_pod_invalid():
    with pytest.raises(LimitRefused) as raised:
        with_limits(pod("p", container("a", requests={"cpu": "800m"})), [lr(CONTAINER_LIMITS)])
    assert raised.value.problems == [("spec.containers[0].resources.requests[cpu]",
                                      'Invalid value: "800m": must be less than or equal to cpu limit of 500m')]
    assert not raised.value.forbidden


def test_an_update_keeps_the_defaults_admission_gave():
    created = with_limits(pod("p", container("a")), [lr(CONTAINER_LIMITS)])
    reapplied = pod("p", container("a"))
    assert keep_defaults(reapplied, created).spec == created.spec
    changed = pod("p", container("a", requests={"cpu": "300m"}))
    assert keep_defaults(changed, created).spec == changed.spec  # a change is validation's to refuse
    plain = pod("p", container("a"))
    assert keep_defaults(plain, plain) is plain


def test_kyb_get_limits_columns():
    now = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
    obj = {**lr_manifest("limits", "default", CONTAINER_LIMITS),
           "metadata": {"name": "limits", "creationTimestamp": "2026-01-10T11:00:00Z"}}
    assert printers.table("LimitRange", [obj], now) == (["NAME", "CREATED AT"], [["limits", "2026-01-10T11:00:00Z"]])


# --- on a real nats-server ---------------------------------------------------------------------


async def test_limit_ranges_admit_pods_from_manifests_and_from_controllers(api):
    client, store = api
    # no LimitRange yet: a pod is stored as given
    bare, _ = await client.apply(pod_manifest("before"))
    assert not bare["spec"]["containers"][0].get("resources")
    await client.apply(lr_manifest("limits", "default", CONTAINER_LIMITS))
    await client.apply(lr_manifest("elsewhere", "kube-system", {"type": "Container", "max": {"cpu": "1m"}}))

    made, _ = await client.apply(pod_manifest("web"))
    assert made["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "500m", "memory": "256Mi"},
                                                          "requests": {"cpu": "100m", "memory": "128Mi"}}
    assert made["metadata"]["annotations"][ANNOTATION].startswith("LimitRanger plugin set: cpu, memory request")
    again, result = await client.apply(pod_manifest("web"))
    assert result == "unchanged" and again["spec"]["containers"][0]["resources"] == made["spec"]["containers"][0][
        "resources"]

    with pytest.raises(errors.Forbidden) as raised:
        await client.apply(pod_manifest("big", container("a", limits={"cpu": "2"})))
    assert raised.value.message == 'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2'
    assert [d.field for d in raised.value.details] == ["spec.containers[0].resources.limits[cpu]"]
    with pytest.raises(errors.Invalid) as raised:
        await client.apply(pod_manifest("odd", container("a", requests={"cpu": "800m"})))
    assert [d.field for d in raised.value.details] == ["spec.containers[0].resources.requests[cpu]"]

    # a controller's create goes straight to the store: the same admission applies
    from_controller = await store.create(pod("from-controller"))
    assert from_controller.spec.containers[0].resources.limits == {"cpu": "500m", "memory": "256Mi"}  # type: ignore[attr-defined]
    with pytest.raises(errors.Forbidden):
        await store.create(pod("too-big", container("a", limits={"memory": "1Gi"})))
    wave = await asyncio.gather(*(store.create(pod(f"wave-{i}")) for i in range(20)))
    assert {p.spec.containers[0].resources.requests["cpu"] for p in wave} == {"100m"}  # type: ignore[attr-defined]
    # another namespace's LimitRange does not apply here; a new one here is seen within a second
    # (each process reads the LimitRanges at most once a second, as admission reads a cache)
    await client.apply(lr_manifest("pods", "default", {"type": "Pod", "max": {"memory": "300Mi"}}))
    tries = iter(range(1000))

    async def refused() -> errors.Forbidden | None:
        try:
            await store.create(pod(f"two-{next(tries)}", container("a"), container("b")))
        except errors.Forbidden as e:
            return e
        return None

    e = await wait_for(refused, 10, "the Pod item applied")
    assert "maximum memory usage per Pod is 300Mi, but limit is 512Mi" in str(e)
    await client.delete("LimitRange", "default", "pods")
    await client.delete("LimitRange", "default", "limits")

    async def unbounded() -> bool:
        made = await store.create(pod(f"after-{next(tries)}"))
        return made.spec.containers[0].resources.limits == {}  # type: ignore[attr-defined]

    await wait_for(unbounded, 10, "no defaults once the LimitRanges are gone")


# --- a property of the admission -----------------------------------------------------------------

millis = st.integers(1, 3000)


@given(st.lists(st.tuples(st.none() | millis, st.none() | millis), min_size=1, max_size=4),
       millis, millis, millis)
def test_an_admitted_pod_lies_within_the_limit_range_and_admitting_it_again_changes_nothing(cs, a, b, c):
    low, mid, high = sorted((a, b, c))
    item = {"type": "Container", "min": {"cpu": f"{low}m"}, "max": {"cpu": f"{high}m"},
            "defaultRequest": {"cpu": f"{mid}m"}}
    containers = [container(f"c{i}", requests={"cpu": f"{r}m"} if r else None, limits={"cpu": f"{li}m"} if li else None)
                  for i, (r, li) in enumerate(cs)]
    ranges = [lr(item)]
    try:
        got = with_limits(pod("p", *containers), ranges)
    except LimitRefused as e:
        assert e.problems and all(f.startswith("spec.containers[") for f, _ in e.problems)
        return
    for ct in got.spec.containers:
        req, lim = ct.resources.requests["cpu"], ct.resources.limits["cpu"]
        assert low <= int(req[:-1]) <= int(lim[:-1]) <= high
    assert with_limits(got, ranges) == got
