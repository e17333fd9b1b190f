"""Properties of the endpoints plan: who is an address, who is not ready, how named target
ports resolve, and that applying a plan converges (a second reconcile plans nothing)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.core import Endpoints, Service, ServicePort, ServiceSpec
from schemas.discovery import EndpointSlice
from schemas.meta import ObjectMeta
from schemas.pod import Container, ContainerPort, Pod, PodCondition, PodSpec, PodStatus
from services.endpoints.reconcile import (
    ENDPOINTS_MANAGED_BY_LABEL,
    desired_slices,
    desired_subsets,
    reconcile,
)


def service(*, selector=None, ports=None, publish=False, name="web") -> Service:
    return Service(
        metadata=ObjectMeta(name=name, namespace="default", uid="svc-uid"),
        spec=ServiceSpec(
            selector={"app": "web"} if selector is None else selector,
            ports=ports or [ServicePort(name="http", port=80, targetPort="http")],
            publishNotReadyAddresses=publish,
        ),
    )


def pod(i: int, *, ready=True, phase="Running", terminating=False, http_port: int | None = 8080, app="web", ip=True) -> Pod:
    ports = [ContainerPort(name="http", containerPort=http_port)] if http_port else []
    return Pod(
        metadata=ObjectMeta(
            name=f"p{i}",
            namespace="default",
            uid=f"uid-{i}",
            labels={"app": app},
            deletionTimestamp="2024-01-01T00:00:00Z" if terminating else None,
        ),
        spec=PodSpec(containers=[Container(name="c", ports=ports)], nodeName="n1"),
        status=PodStatus(
            phase=phase,
            podIP=f"127.1.0.{i + 1}" if ip else "",
            conditions=[PodCondition(type="Ready", status="True" if ready else "False")],
        ),
    )


pods_strategy = st.lists(
    st.builds(
        lambda i, ready, phase, terminating, port, app, ip: (i, dict(ready=ready, phase=phase, terminating=terminating, http_port=port, app=app, ip=ip)),
        st.integers(0, 200),
        st.booleans(),
        st.sampled_from(["Pending", "Running", "Succeeded", "Failed"]),
        st.booleans(),
        st.sampled_from([None, 8080, 9090]),
        st.sampled_from(["web", "other"]),
        st.booleans(),
    ),
    max_size=12,
    unique_by=lambda t: t[0],
).map(lambda items: [pod(i, **kw) for i, kw in items])


def addresses(subsets) -> tuple[set[str], set[str]]:
    ready = {a.ip for s in subsets for a in s.addresses}
    not_ready = {a.ip for s in subsets for a in s.notReadyAddresses}
    return ready, not_ready


@settings(max_examples=200, deadline=None)
@given(pods=pods_strategy, publish=st.booleans())
def test_addresses_are_exactly_the_eligible_selected_pods(pods, publish):
    svc = service(publish=publish)
    ready, not_ready = addresses(desired_subsets(svc, pods))
    assert not ready & not_ready
    for p in pods:
        eligible = (
            p.metadata.labels["app"] == "web"
            and p.status.podIP
            and p.status.phase not in ("Succeeded", "Failed")
            and p.spec.containers[0].ports  # the named target port resolves
        )
        ip = p.status.podIP
        is_ready = p.status.conditions[0].status == "True" and p.metadata.deletionTimestamp is None
        if not eligible or (p.metadata.deletionTimestamp is not None and not publish):
            assert ip not in ready | not_ready or not ip
        elif publish or is_ready:
            assert ip in ready
        else:
            assert ip in not_ready


@settings(max_examples=200, deadline=None)
@given(pods=pods_strategy)
def test_named_target_port_resolves_per_pod(pods):
    for subset in desired_subsets(service(), pods):
        (port,) = subset.ports
        for a in [*subset.addresses, *subset.notReadyAddresses]:
            owner = next(p for p in pods if p.status.podIP == a.ip)
            assert port.port == owner.spec.containers[0].ports[0].containerPort


@settings(max_examples=200, deadline=None)
@given(pods=pods_strategy, publish=st.booleans())
def test_slices_mark_terminating_pods_not_ready(pods, publish):
    for s in desired_slices(service(publish=publish), pods):
        for ep in s.endpoints:
            owner = next(p for p in pods if p.status.podIP == ep.addresses[0])
            if owner.metadata.deletionTimestamp is not None:
                assert ep.conditions.terminating is True
                assert ep.conditions.ready is publish


def stored(obj, rv: int = 1):
    return msgspec.structs.replace(obj, metadata=msgspec.structs.replace(obj.metadata, resourceVersion=str(rv)))


@settings(max_examples=200, deadline=None)
@given(before=pods_strategy, after=pods_strategy)
def test_applying_a_plan_converges(before, after):
    svc = service()
    first = reconcile(svc, before, None, [])
    ep = stored(first.create_endpoints)
    slices = [stored(s) for s in first.create_slices]
    second = reconcile(svc, after, ep, slices)
    ep2 = second.update_endpoints or ep
    by_name = {s.metadata.name: s for s in slices}
    for s in [*second.create_slices, *second.update_slices]:
        by_name[s.metadata.name] = s
    for name in second.delete_slices:
        del by_name[name]
    third = reconcile(svc, after, ep2, list(by_name.values()))
    assert third.empty


def test_service_without_selector_is_left_to_the_user():
    svc = service(selector={})
    user = Endpoints(metadata=ObjectMeta(name="web", namespace="default"))
    plan = reconcile(svc, [pod(1)], user, [])
    assert plan.empty


def test_deleted_service_removes_its_managed_objects_only():
    svc = service()
    first = reconcile(svc, [pod(1)], None, [])
    assert first.create_endpoints.metadata.labels[ENDPOINTS_MANAGED_BY_LABEL]
    plan = reconcile(None, [], first.create_endpoints, first.create_slices)
    assert plan.delete_endpoints
    assert plan.delete_slices == [first.create_slices[0].metadata.name]
    user = Endpoints(metadata=ObjectMeta(name="web", namespace="default"))
    assert not reconcile(None, [], user, []).delete_endpoints


@pytest.mark.parametrize(
    "target,expected",
    [pytest.param(None, 80, id="defaults-to-port"), pytest.param(9000, 9000, id="number"), pytest.param("http", 8080, id="named")],
)
def test_target_port_forms(target, expected):
    svc = service(ports=[ServicePort(name="", port=80, targetPort=target)])
    (subset,) = desired_subsets(svc, [pod(1)])
    assert subset.ports[0].port == expected
    assert isinstance(desired_slices(svc, [pod(1)])[0], EndpointSlice)
