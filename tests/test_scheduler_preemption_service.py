"""Preemption on a real nats-server: the api (priority admission), the scheduler and the
disruption controller running, pods run by a hollow kubelet that removes a terminating pod as soon
as it sees it. A full node: a high-priority pod evicts exactly the lower-priority pods it needs and
then runs there; ``preemptionPolicy: Never`` waits; equal priority preempts nothing; a pod a
PodDisruptionBudget protects is spared when another victim will do; a higher-priority preemptor
takes a node from a lower nominee, and a victim already terminating is not evicted twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from kyb import errors
from kyb.client import ApiClient
from kyb.store import Store
from schemas.pod import Pod
from tests.cluster import QUIET, HollowKubelet, Services, hollow_node, wait_api, wait_for

NO_VICTIMS = ("0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
              "1 No preemption victims found for incoming pod..")


class Env:
    def __init__(self, nc: Any, store: Store, api: ApiClient, kubelet: HollowKubelet) -> None:
        self.nc, self.store, self.api, self.kubelet = nc, store, api, kubelet

    async def node(self, name: str, cpu: str) -> None:
        await self.store.create(hollow_node(name, resources={"cpu": cpu, "memory": "16Gi", "pods": "110"}))

    async def priority_class(self, name: str, value: int, policy: str | None = None) -> None:
        body: dict[str, Any] = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                "metadata": {"name": name}, "value": value}
        if policy:
            body["preemptionPolicy"] = policy
        await self.api.apply(body)

    async def pod(self, name: str, cpu: str, priority_class: str = "", app: str = "", grace: int = 30) -> None:
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}],
                                "terminationGracePeriodSeconds": grace}
        if priority_class:
            spec["priorityClassName"] = priority_class
        await self.api.apply({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": name, "namespace": "default", "labels": {"app": app or name}},
                              "spec": spec})

    async def bound_pod(self, name: str, cpu: str, node: str) -> None:
        """A pod bound to ``node`` by its manifest (no kubelet runs n3's pods: once deleted, they
        stay terminating)."""
        await self.api.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                              "spec": {"nodeName": node, "containers": [
                                  {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]}})

    async def get(self, name: str) -> Pod:
        p = await self.store.get("Pod", "default", name)
        assert isinstance(p, Pod)
        return p

    async def running(self, *names: str) -> bool:
        pods = [await self.get(n) for n in names]
        return all(p.status.phase == "Running" and p.spec.nodeName and not p.metadata.deletionTimestamp for p in pods)

    async def names(self) -> set[str]:
        return {p.metadata.name for p in await self.store.list("Pod", "default")}

    async def message(self, name: str) -> str:
        p = await self.get(name)
        return next((c.message for c in p.status.conditions if c.type == "PodScheduled" and c.status == "False"), "")

    async def nominated(self, name: str, node: str) -> bool:
        return (await self.get(name)).status.nominatedNodeName == node

    async def terminating(self, name: str) -> bool:
        p = await self.get(name)
        return p.metadata.deletionTimestamp is not None and any(
            c.type == "DisruptionTarget" and c.status == "True" and c.reason == "PreemptionByScheduler"
            for c in p.status.conditions)

    async def last_event(self, name: str) -> dict[str, Any]:
        try:
            msg = await self.nc.jetstream().get_last_msg("KYB_EVENTS", f"kyb.events.default.Pod.{name}")
        except Exception as e:  # not there yet
            raise errors.NotFound(str(e)) from e
        event: dict[str, Any] = msgspec.json.decode(msg.data)
        return event


@pytest.fixture
async def env(nats_url: str, nc: Any) -> AsyncIterator[Env]:
    services = Services(["api", "scheduler", "disruption"], nats_url, QUIET).start()
    store = Store(nc.jetstream())
    await wait_api(nc, services.task)
    kubelet = HollowKubelet(store, nc, nodes=["n1", "n2"]).start()
    await kubelet.wait_synced()
    try:
        yield Env(nc, store, ApiClient(nc), kubelet)
    finally:
        await kubelet.stop()
        await services.stop()


async def test_a_high_priority_pod_evicts_exactly_what_it_needs_and_runs_there(env: Env) -> None:
    await env.priority_class("low", 10)
    await env.priority_class("high", 1000)
    await env.node("n1", "4")
    for name in ("zero-a", "zero-b"):
        await env.pod(name, "1", grace=7)
    for name in ("low-a", "low-b"):
        await env.pod(name, "1", "low")
    await wait_for(lambda: env.running("zero-a", "zero-b", "low-a", "low-b"), 20, "the node full")
    graceful = env.kubelet.when(lambda p: p.metadata.name.startswith("zero-") and p.metadata.deletionTimestamp is not None
                                and p.metadata.deletionGracePeriodSeconds == 7
                                and any(c.type == "DisruptionTarget" and c.reason == "PreemptionByScheduler"
                                        for c in p.status.conditions))
    nominated = env.kubelet.when(lambda p: p.metadata.name == "high" and p.status.nominatedNodeName == "n1")
    await env.pod("high", "2", "high")
    await wait_for(nominated.is_set, 20, "the high-priority pod nominated to n1")
    # The room being freed is the nominated pod's: a lower-priority pod decided meanwhile (the
    # victims go at once here, the preemptor waits for its back-off) does not take it.
    await env.pod("sneaky", "1")
    await wait_for(lambda: env.running("high"), 30, "the high-priority pod running")
    high = await env.get("high")
    assert high.spec.nodeName == "n1" and high.status.nominatedNodeName == ""  # cleared once bound
    assert graceful.is_set()
    assert await wait_for(lambda: env.message("sneaky"), 20, "sneaky unschedulable") == NO_VICTIMS
    assert not (await env.get("sneaky")).spec.nodeName
    # exactly the two priority-0 pods went; the priority-10 ones were put back
    assert await env.names() == {"low-a", "low-b", "high", "sneaky"}
    assert await env.running("low-a", "low-b")
    for name in ("zero-a", "zero-b"):
        event = await wait_for(lambda name=name: env.last_event(name), 10, f"the Preempted event of {name}")
        assert event["reason"] == "Preempted"
        assert event["message"] == f"Preempted by pod {high.metadata.uid} on node n1"


async def test_never_waits_and_equal_priority_preempts_nothing(env: Env) -> None:
    await env.priority_class("low", 10)
    await env.priority_class("patient", 1000, "Never")
    await env.node("n1", "2")
    await env.pod("low-a", "1", "low")
    await env.pod("low-b", "1", "low")
    await wait_for(lambda: env.running("low-a", "low-b"), 20, "the node full")
    await env.pod("patient", "1", "patient")
    await env.pod("peer", "1", "low")
    never = ("0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never..")
    assert await wait_for(lambda: env.message("patient"), 20, "patient unschedulable") == never
    assert await wait_for(lambda: env.message("peer"), 20, "peer unschedulable") == NO_VICTIMS
    assert await env.running("low-a", "low-b")
    assert (await env.get("patient")).status.nominatedNodeName == ""
    # room made by someone else: the waiting pod of the highest priority goes first
    await env.store.delete("Pod", "default", "low-a")
    await wait_for(lambda: env.running("patient"), 30, "patient running once there is room")
    assert await env.running("low-b") and not (await env.get("peer")).spec.nodeName


async def test_a_pod_a_budget_protects_is_spared_when_another_will_do(env: Env) -> None:
    await env.priority_class("five", 5)
    await env.priority_class("high", 1000)
    await env.node("n1", "2")
    await env.pod("guarded", "1")  # priority 0: without the budget it would be the victim
    await env.pod("free", "1", "five")
    await env.api.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                         "metadata": {"name": "guard", "namespace": "default"},
                         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}})
    await wait_for(lambda: env.running("guarded", "free"), 20, "the node full")

    async def budget_settled() -> bool:
        b: Any = await env.store.get("PodDisruptionBudget", "default", "guard")
        return bool(b.status.currentHealthy == 1 and b.status.disruptionsAllowed == 0)

    await wait_for(budget_settled, 20, "the budget allowing no disruption")
    await env.pod("high", "1", "high")
    await wait_for(lambda: env.running("high"), 30, "the high-priority pod running")
    assert await env.names() == {"guarded", "high"}
    assert (await env.get("high")).spec.nodeName == "n1"


async def test_a_higher_priority_preemptor_takes_the_node_from_a_lower_nominee(env: Env) -> None:
    await env.priority_class("mid", 500)
    await env.priority_class("high", 1000)
    await env.node("n3", "2")
    await env.bound_pod("z1", "1", "n3")
    await env.bound_pod("z2", "1", "n3")
    await env.pod("mid", "1", "mid")
    await wait_for(lambda: env.nominated("mid", "n3"), 20, "mid nominated to n3")
    await wait_for(lambda: env.terminating("z2"), 20, "z2, the younger, preempted and terminating")
    assert not (await env.get("z1")).metadata.deletionTimestamp
    mid = await env.get("mid")
    # decided again, mid waits for its victim to go and does not preempt again meanwhile
    waiting = ("0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to a terminating pod on the "
               "nominated node..")

    async def says_waiting() -> bool:
        return await env.message("mid") == waiting

    await wait_for(says_waiting, 20, "mid waiting for its victim")
    assert not (await env.get("z1")).metadata.deletionTimestamp
    await env.pod("high", "2", "high")
    await wait_for(lambda: env.nominated("high", "n3"), 20, "high nominated to n3")
    await wait_for(lambda: env.nominated("mid", ""), 20, "mid's nomination cleared")
    await wait_for(lambda: env.terminating("z1"), 20, "z1 preempted too")
    # z2 was already going: it is not evicted a second time
    assert (await env.last_event("z2"))["message"] == f"Preempted by pod {mid.metadata.uid} on node n3"
    high = await env.get("high")
    assert (await env.last_event("z1"))["message"] == f"Preempted by pod {high.metadata.uid} on node n3"
