"""CustomResourceDefinitions through the api service on a real nats-server: a CRD makes its
kind exist (established, served, validated by its schema), the status subresource, a clash of
names, and deletion taking the CRD's objects with it."""

from __future__ import annotations

import asyncio
import copy
import datetime
import time
from pathlib import Path

import pytest
import yaml

from kyb import errors
from kyb.cli import printers
from schemas import registry

MANIFESTS = Path(__file__).parent / "manifests"
CRONTAB_CRD = yaml.safe_load((MANIFESTS / "crd" / "crontab-crd.yaml").read_text())


@pytest.fixture(autouse=True)
def _forget_custom_kinds():
    """The registry is per process: kinds a test's CRDs made go with the test."""
    yield
    for info in registry.all_kinds():
        if info.custom is not None:
            registry.unregister_custom(info.custom.crd)


def crontab(name: str, **spec) -> dict:
    return {"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": name},
            "spec": {"cronSpec": "* * * * */5", "image": "my-awesome-cron-image", **spec}}


async def eventually(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await fn()
        except (errors.NotFound, AssertionError):
            if time.monotonic() > deadline:
                raise
        else:
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_crd_makes_its_kind_and_checks_objects_by_its_schema(api):
    client, _ = api
    crd, result = await client.apply(CRONTAB_CRD)
    assert result == "created"
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["kind"] == "CronTab"
    assert crd["status"]["storedVersions"] == ["v1"]
    assert "customresourcecleanup.apiextensions.k8s.io" in crd["metadata"]["finalizers"]

    obj, result = await client.apply(crontab("my-new-cron-object"))
    assert result == "created"
    assert obj["spec"]["replicas"] == 1  # the schema's default
    assert obj["metadata"]["namespace"] == "default"
    got = await client.get("crontabs", "default", "my-new-cron-object")
    assert got["spec"]["cronSpec"] == "* * * * */5"
    assert [o["metadata"]["name"] for o in await client.list("ct", "default")] == ["my-new-cron-object"]
    other, _ = await client.apply(crontab("other", image="another-image"))
    # a field selector may name the object's own fields (Kubernetes: its CRD's selectableFields)
    selected = await client.list("crontabs", "default", field_selector="spec.image=another-image")
    assert [o["metadata"]["name"] for o in selected] == ["other"]
    # a quota counting the kind does not refuse it (custom kinds are not counted yet)
    await client.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
                        "spec": {"hard": {"count/crontabs.stable.example.com": "1"}}})
    await client.apply(crontab("third"))

    # kyb get's columns are the CRD's additionalPrinterColumns
    head, rows = printers.table("CronTab", [got], datetime.datetime.now(datetime.UTC))
    assert head == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert other["spec"]["image"] == "another-image"
    assert rows[0][:3] == ["my-new-cron-object", "* * * * */5", "1"]

    with pytest.raises(errors.Invalid) as bad:
        await client.apply(crontab("bad", replicas=15, cronSpec="not a schedule"))
    fields = {d.field: d.message for d in bad.value.details}
    assert "should be less than or equal to 10" in fields["spec.replicas"]
    assert "should match" in fields["spec.cronSpec"]
    with pytest.raises(errors.Invalid) as unknown:
        await client.apply(crontab("unknown", color="blue"))
    assert [d.field for d in unknown.value.details] == ["spec.color"]
    with pytest.raises(errors.NotFound):
        await client.get("crontabs", "default", "bad")  # nothing half-written


async def test_status_is_written_through_its_subresource_only(api):
    client, _ = api
    await client.apply(CRONTAB_CRD)
    obj, _ = await client.apply(crontab("c1"))
    obj["status"] = {"replicas": 3}
    updated = await client.replace_status(obj)
    assert updated["status"] == {"replicas": 3}
    # a write of the main resource leaves the status as it is, and a status write the spec
    updated["spec"]["replicas"] = 2
    updated["status"] = {"replicas": 9}
    main = await client.replace(updated)
    assert main["spec"]["replicas"] == 2 and main["status"] == {"replicas": 3}
    assert main["metadata"]["generation"] == 2
    main["spec"]["replicas"] = 5
    main["status"] = {"replicas": 4}
    status = await client.replace_status(main)
    assert status["spec"]["replicas"] == 2 and status["status"] == {"replicas": 4}


async def test_a_crd_whose_kind_is_taken_is_not_established(api):
    client, _ = api
    crd = copy.deepcopy(CRONTAB_CRD)
    crd["metadata"]["name"] = "pods.stable.example.com"
    crd["spec"]["names"] = {"plural": "pods", "singular": "pod", "kind": "Pod"}
    made, _ = await client.apply(crd)
    conditions = {c["type"]: (c["status"], c.get("message", "")) for c in made["status"]["conditions"]}
    assert conditions["NamesAccepted"][0] == "False" and "built-in" in conditions["NamesAccepted"][1]
    assert conditions["Established"][0] == "False"
    with pytest.raises(errors.BadRequest):
        await client.apply({"apiVersion": "stable.example.com/v1", "kind": "Pod", "metadata": {"name": "x"}})


async def test_bad_crds_are_refused_naming_the_field(api):
    client, _ = api
    crd = copy.deepcopy(CRONTAB_CRD)
    crd["metadata"]["name"] = "crontabs.example.com"
    crd["spec"]["versions"][0]["storage"] = False
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["image"] = {}
    with pytest.raises(errors.Invalid) as bad:
        await client.apply(crd)
    fields = {d.field for d in bad.value.details}
    assert {"metadata.name", "spec.versions",
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[image].type"} <= fields
    with pytest.raises(errors.NotFound):
        await client.get("customresourcedefinitions", None, "crontabs.example.com")


async def test_deleting_a_crd_deletes_its_objects_then_itself(api):
    client, store = api
    await client.apply(CRONTAB_CRD)
    for i in range(3):
        await client.apply(crontab(f"c{i}"))
    held = crontab("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    await client.apply(held)
    await client.delete("customresourcedefinitions", None, "crontabs.stable.example.com")

    async def only_held_left():
        left = await client.list("crontabs", "default")
        return [o["metadata"]["name"] for o in left] == ["held"] and left[0]["metadata"].get("deletionTimestamp")

    await eventually(only_held_left)
    crd = await client.get("customresourcedefinitions", None, "crontabs.stable.example.com")
    assert crd["metadata"]["deletionTimestamp"]
    assert any(c["type"] == "Terminating" and c["status"] == "True" for c in crd["status"]["conditions"])
    with pytest.raises(errors.Forbidden):
        await client.apply(crontab("late"))  # no new objects while the CRD is terminating

    obj = await client.get("crontabs", "default", "held")
    obj["metadata"]["finalizers"] = []
    await client.replace(obj)

    async def crd_gone():
        try:
            await client.get("customresourcedefinitions", None, "crontabs.stable.example.com")
        except errors.NotFound:
            return True
        return False

    await eventually(crd_gone)

    async def kind_gone():
        try:
            registry.by_kind("CronTab")
        except registry.UnknownKind:
            return True
        return False

    await eventually(kind_gone)  # the api's watch of the CRDs stops serving the kind
    with pytest.raises(errors.BadRequest):
        await client.apply(crontab("after"))


@pytest.fixture
async def api_and_gc(nats_url, nc):
    from kyb.client import ApiClient
    from kyb.store import Store
    from tests.cluster import QUIET, Services, wait_api

    services = Services(["api", "gc"], nats_url, QUIET).start()
    await wait_api(nc, services.task)
    try:
        yield ApiClient(nc), Store(nc.jetstream())
    finally:
        await services.stop()


async def test_the_garbage_collector_follows_owners_of_custom_kinds(api_and_gc):
    client, _ = api_and_gc
    await client.apply(CRONTAB_CRD)
    owner, _ = await client.apply(crontab("owner"))
    ref = {"apiVersion": "stable.example.com/v1", "kind": "CronTab", "name": "owner",
           "uid": owner["metadata"]["uid"], "controller": True}
    for name in ("dep-a", "dep-b"):
        await client.apply({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name, "ownerReferences": [ref]}, "data": {"k": "v"}})
    # a custom object owned by a custom object is followed as well
    child = crontab("child")
    child["metadata"]["ownerReferences"] = [ref]
    await client.apply(child)
    # a dependent whose owner is alive stays; one whose owner never existed goes
    stray = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stray", "ownerReferences": [
        {**ref, "name": "nobody", "uid": "00000000-0000-0000-0000-000000000000"}]}}
    await client.apply(stray)

    async def stray_gone():
        try:
            await client.get("configmaps", "default", "stray")
        except errors.NotFound:
            return True
        return False

    await eventually(stray_gone, timeout=20)
    assert (await client.get("configmaps", "default", "dep-a"))["data"] == {"k": "v"}
    assert await client.get("crontabs", "default", "child")

    await client.delete("crontabs", "default", "owner")

    async def dependents_gone():
        left = [o["metadata"]["name"] for o in await client.list("configmaps", "default")]
        kids = [o["metadata"]["name"] for o in await client.list("crontabs", "default")]
        return not {"dep-a", "dep-b"} & set(left) and kids == []

    await eventually(dependents_gone, timeout=20)
