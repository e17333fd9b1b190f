"""ResourceQuota (v1): validation, usage and the admission charge as pure rules, `kyb get quota`'s
columns, and on a real nats-server the resourcequota service keeping status.hard and status.used,
pods over quota refused with Kubernetes' "exceeded quota" on both write paths (the api and
Store.create), concurrent creates never passing hard, and usage released when pods go."""

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
from kyb.client import ApiClient
from kyb.store import Store
from schemas.pod import Pod
from schemas.quantity import parse_quantity
from schemas.quota import QuotaRefused, ResourceQuota, charge, usage
from schemas.validation import SchemaError, decode
from tests.cluster import QUIET, Services, wait_api, wait_for


def quota_manifest(name: str = "q", **hard: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": "default"},
            "spec": {"hard": {k.replace("_", "."): v for k, v in hard.items()}}}


def quota(hard: dict[str, str], used: dict[str, str] | None = None, name: str = "q") -> ResourceQuota:
    return msgspec.convert({"metadata": {"name": name, "namespace": "default"}, "spec": {"hard": hard},
                            "status": {"hard": hard, "used": used if used is not None else {}}}, ResourceQuota)


def pod_manifest(name: str, cpu: str | None = "100m", memory: str | None = "64Mi", phase: str | None = None
                 ) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if cpu:
        res["requests"] = {"cpu": cpu}
    if memory:
        res["limits"] = {"memory": memory}
    m: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                         "spec": {"containers": [{"name": "c", "image": "busybox", "resources": res}]}}
    if phase:
        m["status"] = {"phase": phase}
    return m


def pod(name: str, **kw: Any) -> Pod:
    return msgspec.convert(pod_manifest(name, **kw), Pod)


# --- pure rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hard", "want"),
    [
        pytest.param({"pods": "-1"}, [("spec.hard[pods]", 'Invalid value: "-1": must be greater than or equal to 0')],
                     id="negative"),
        pytest.param({"pods": "1.5"}, [("spec.hard[pods]", 'Invalid value: "1.5": must be an integer')],
                     id="fractional-count"),
        pytest.param({"widgets": "1"}, [("spec.hard[widgets]",
                                         'Invalid value: "widgets": must be a standard resource for quota')],
                     id="not-standard"),
        pytest.param({"requests.cpu": "much"}, [("spec.hard[requests.cpu]", "quantities must match the regular "
                                                 "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': \"much\"")],
                     id="not-a-quantity"),
    ],
)
def test_bad_quotas_are_refused_naming_the_field(hard, want):
    with pytest.raises(SchemaError) as raised:
        decode({**quota_manifest(), "spec": {"hard": hard}})
    assert raised.value.details == want


def test_usage_counts_non_terminal_pods_and_sums_their_resources():
    hard = {"pods": "10", "requests.cpu": "2", "cpu": "2", "limits.memory": "1Gi", "count/configmaps": "3",
            "services.nodeports": "1"}
    pods = [pod("a"), pod("b", cpu="250m", memory="128Mi"), pod("done", phase="Succeeded"), pod("bare", cpu=None,
                                                                                               memory=None)]
    assert usage(hard, pods, {"configmaps": 2}) == {"pods": "3", "requests.cpu": "350m", "cpu": "350m",
                                                    "limits.memory": "192Mi", "count/configmaps": "2"}
    assert usage({"pods": "1"}, [], {}) == {"pods": "0"}


def test_charge_adds_the_pod_or_refuses_as_kubernetes_does():
    q = quota({"pods": "2", "requests.cpu": "1"}, {"pods": "1", "requests.cpu": "800m"})
    assert charge(q, pod("a", cpu="200m")) == {"pods": "2", "requests.cpu": "1"}
    with pytest.raises(QuotaRefused) as raised:
        charge(q, pod("b", cpu="300m"))
    assert raised.value.message == ("exceeded quota: q, requested: requests.cpu=300m, used: requests.cpu=800m, "
                                    "limited: requests.cpu=1")
    assert raised.value.field == "spec.hard[requests.cpu]"
    with pytest.raises(QuotaRefused) as raised:
        charge(q, pod("c", cpu=None))
    assert raised.value.message == "failed quota: q: must specify requests.cpu for: c"
    with pytest.raises(QuotaRefused) as raised:
        charge(quota({"pods": "2"}, {}), pod("d"))
    assert raised.value.message == "status unknown for quota: q, resource: pods"
    assert charge(quota({"configmaps": "1"}, {"configmaps": "0"}), pod("e")) is None  # limits nothing of pods
    full = quota({"pods": "1"}, {"pods": "1"})
    with pytest.raises(QuotaRefused) as raised:
        charge(full, pod("f"))
    assert raised.value.message == "exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"


def test_kyb_get_quota_columns():
    now = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
    obj = {**quota_manifest(), "metadata": {"name": "compute", "creationTimestamp": "2026-01-10T11:00:00Z"},
           "status": {"hard": {"pods": "10", "requests.cpu": "1", "limits.memory": "1Gi"},
                      "used": {"pods": "2", "requests.cpu": "200m"}}}
    assert printers.table("ResourceQuota", [obj], now) == (
        ["NAME", "AGE", "REQUEST", "LIMIT"],
        [["compute", "60m", "pods: 2/10, requests.cpu: 200m/1", "limits.memory: 0/1Gi"]])


# --- on a real nats-server ---------------------------------------------------------------------


@pytest.fixture
async def cluster(nats_url, nc):
    services = Services(["api", "resourcequota"], nats_url, QUIET).start()
    await wait_api(nc, services.task)
    try:
        yield ApiClient(nc), Store(nc.jetstream())
    finally:
        await services.stop()


async def used_is(client: ApiClient, want: dict[str, str], name: str = "compute") -> dict[str, Any] | None:
    q = await client.get("ResourceQuota", "default", name)
    return q if (q.get("status") or {}).get("used") == want else None


async def test_quotas_are_kept_and_enforced_on_both_write_paths(cluster):
    client, store = cluster
    await client.apply(pod_manifest("before"))
    await client.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one"}, "data": {"a": "b"}})
    await client.apply(quota_manifest("compute", pods="3", requests_cpu="1", limits_memory="256Mi"))
    await client.apply(quota_manifest("objects", **{"count/configmaps": "5", "count/pods": "10"}))
    q = await wait_for(lambda: used_is(client, {"pods": "1", "requests.cpu": "100m", "limits.memory": "64Mi"}),
                       20, "the compute quota's status")
    assert q["status"]["hard"] == {"pods": "3", "requests.cpu": "1", "limits.memory": "256Mi"}
    await wait_for(lambda: used_is(client, {"count/configmaps": "1", "count/pods": "1"}, "objects"), 20,
                   "the object counts")

    made, _ = await client.apply(pod_manifest("second", cpu="500m", memory="64Mi"))
    assert made["metadata"]["name"] == "second"
    assert await used_is(client, {"pods": "2", "requests.cpu": "600m", "limits.memory": "128Mi"})  # charged at once
    with pytest.raises(errors.Forbidden) as raised:
        await client.apply(pod_manifest("greedy", cpu="500m"))
    assert raised.value.message == ('pods "greedy" is forbidden: exceeded quota: compute, requested: '
                                    "requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1")
    assert [d.field for d in raised.value.details] == ["spec.hard[requests.cpu]"]
    with pytest.raises(errors.Forbidden) as raised:
        await client.apply(pod_manifest("unbounded", memory=None))
    assert "failed quota: compute: must specify limits.memory for: c" in raised.value.message

    # controllers' creates are charged too; concurrent ones never pass hard (1 pod left)
    async def attempt(i: int) -> bool:
        try:
            await store.create(pod(f"wave-{i}", cpu="10m", memory="1Mi"))
        except errors.Forbidden as e:
            assert "exceeded quota: compute, requested: pods=1" in e.message
            return False
        return True

    made_ok = await asyncio.gather(*(attempt(i) for i in range(8)))
    assert sum(made_ok) == 1
    assert len(await store.list("Pod", "default")) == 3

    # a pod that goes is released by the controller
    await client.delete("Pod", "default", "second", grace_period_seconds=0)
    await wait_for(lambda: _gone(store, "second"), 20, "second deleted")
    await wait_for(lambda: used_is(client, {"pods": "2", "requests.cpu": "110m", "limits.memory": "65Mi"}), 20,
                   "the deleted pod released")
    again, _ = await client.apply(pod_manifest("third", cpu="100m", memory="64Mi"))
    assert again["metadata"]["name"] == "third"


async def test_a_large_wave_of_creates_is_charged_in_batches_without_conflicts(cluster):
    client, store = cluster
    await client.apply(quota_manifest("wave", pods="150"))
    await wait_for(lambda: used_is(client, {"pods": "0"}, "wave"), 20, "the quota's status")

    async def attempt(i: int) -> bool:
        try:
            await store.create(pod(f"w-{i}"))
        except errors.Forbidden:
            return False
        return True

    made = await asyncio.gather(*(attempt(i) for i in range(200)))  # a Conflict would be raised here
    assert sum(made) == 150 and len(await store.list("Pod", "default")) == 150
    assert await used_is(client, {"pods": "150"}, "wave")


async def test_object_counts_are_enforced_on_both_write_paths(cluster):
    client, store = cluster

    def cm(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}}

    await client.apply(quota_manifest("objects", configmaps="2", **{"count/deployments.apps": "0"}))
    await wait_for(lambda: used_is(client, {"configmaps": "0", "count/deployments.apps": "0"}, "objects"), 20,
                   "the quota's status")
    await client.apply(cm("one"))
    await store.create(decode(cm("two")))  # a controller's create is charged as well
    with pytest.raises(errors.Forbidden) as raised:
        await client.apply(cm("three"))
    assert raised.value.message == ('configmaps "three" is forbidden: exceeded quota: objects, requested: '
                                    "configmaps=1, used: configmaps=2, limited: configmaps=2")
    assert [d.field for d in raised.value.details] == ["spec.hard[configmaps]"]
    with pytest.raises(errors.Forbidden) as raised:
        await store.create(decode(cm("four")))
    with pytest.raises(errors.Forbidden) as raised:
        await client.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                                "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
                                    {"name": "c", "image": "busybox"}]}}}})
    assert "exceeded quota: objects, requested: count/deployments.apps=1" in raised.value.message
    # a deleted one is released by the service's next count, and then another fits
    await client.delete("ConfigMap", "default", "one")
    await wait_for(lambda: used_is(client, {"configmaps": "1", "count/deployments.apps": "0"}, "objects"), 30,
                   "the deleted ConfigMap released")
    await client.apply(cm("three"))


async def test_a_namespace_charged_without_pause_is_still_released(cluster):
    client, store = cluster
    await client.apply(quota_manifest("busy", pods="100"))
    await wait_for(lambda: used_is(client, {"pods": "0"}, "busy"), 20, "the quota's status")
    await client.apply(pod_manifest("gone"))
    await client.delete("Pod", "default", "gone", grace_period_seconds=0)
    # a new pod every 0.3 s: the quota never stays still for the 2 s a lowering waits for
    for i in range(60):
        await store.create(pod(f"busy-{i}"))
        live = len(await store.list("Pod", "default"))
        used = (await client.get("ResourceQuota", "default", "busy"))["status"]["used"]["pods"]
        if int(used) == live:
            break
        await asyncio.sleep(0.3)
    else:
        raise AssertionError(f"the deleted pod was never released (used {used}, live pods {live})")


async def _gone(store: Store, name: str) -> bool:
    return all(p.metadata.name != name for p in await store.list("Pod", "default"))


# --- through kubectl, on a `kyb up` with its per-component NATS credentials --------------------


def test_a_deployment_under_a_pod_quota_and_a_limit_range_through_kubectl(tmp_path):
    import json
    import os

    from tests.cluster import wait_until
    from tests.test_apiserver_kubectl import KUBECTL, _kubectl, apiserver_up

    if not os.path.exists(KUBECTL):
        pytest.skip("kubectl is not installed")
    with apiserver_up(tmp_path / "state") as up:
        quota_file, app = tmp_path / "quota.yaml", tmp_path / "app.yaml"
        quota_file.write_text("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: pods}\nspec: {hard: {pods: '2'}}\n")
        app.write_text(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n"
            "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
            "    spec: {containers: [{name: c, image: busybox, command: [sleep, '3600']}]}\n")
        limits = tmp_path / "limits.yaml"
        limits.write_text("apiVersion: v1\nkind: LimitRange\nmetadata: {name: defaults}\nspec:\n  limits:\n"
                          "  - {type: Container, defaultRequest: {cpu: 50m}, default: {cpu: 200m}}\n")
        _kubectl(up, "apply", "-f", str(limits))  # the replication controller's creates get its defaults
        _kubectl(up, "apply", "-f", str(quota_file))
        wait_until(lambda: "pods: 0/2" in _kubectl(up, "get", "quota", "pods").stdout, 30, "the quota's status")
        _kubectl(up, "apply", "-f", str(app))

        def pods() -> list[str]:
            out = _kubectl(up, "get", "pods", "-l", "app=web", "-o", "json").stdout
            return [p["metadata"]["name"] for p in json.loads(out)["items"]]

        wait_until(lambda: len(pods()) == 2, 60, "two of the three pods")
        wait_until(lambda: "pods: 2/2" in _kubectl(up, "get", "quota", "pods").stdout, 30, "the quota used up")
        events = _kubectl(up, "get", "events", "-o", "json").stdout
        assert "exceeded quota: pods" in events
        assert len(pods()) == 2
        resources = json.loads(_kubectl(up, "get", "pods", "-l", "app=web", "-o", "json").stdout)["items"][0][
            "spec"]["containers"][0]["resources"]
        assert resources == {"limits": {"cpu": "200m"}, "requests": {"cpu": "50m"}}


# --- a property of the charge --------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(1, 900), st.booleans()), max_size=12), st.integers(0, 5), st.integers(1, 3000))
def test_charging_pods_one_by_one_never_passes_hard_and_adds_up_to_their_usage(pods_, max_pods, max_millis):
    hard = {"pods": str(max_pods), "requests.cpu": f"{max_millis}m"}
    q = quota(hard, usage(hard, [], {}))
    admitted = []
    for i, (cpu, terminal) in enumerate(pods_):
        p = pod(f"p{i}", cpu=f"{cpu}m", phase="Succeeded" if terminal else None)
        try:
            used = charge(q, p)
        except QuotaRefused as e:
            assert e.message.startswith("exceeded quota: q, requested: ")
            continue
        if used is not None:
            q = msgspec.structs.replace(q, status=msgspec.structs.replace(q.status, used=used))
        admitted.append(p)
    assert q.status.used == usage(hard, admitted, {})
    assert int(q.status.used["pods"]) <= max_pods
    assert parse_quantity(q.status.used["requests.cpu"]) <= parse_quantity(hard["requests.cpu"])
