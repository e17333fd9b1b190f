"""What a pod's securityContext, shareProcessNamespace and sysctls do on each runtime, as a user
sees it from inside the containers and in the pod's events: on Docker the user, groups,
capabilities, read-only root, no-new-privileges, seccomp (RuntimeDefault, Unconfined, a
Localhost profile from the kubelet's seccomp directory) and a PID namespace shared with the
sandbox; the kubelet's refusals (AppArmor on a host without it, unsafe sysctls); on the
process runtime a Warning naming what it cannot apply."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import DeliverPolicy

from schemas.pod import Pod
from services.kubelet.sync import host_apparmor_enabled
from tests.images import BUSYBOX_TAG, busybox_image  # noqa: F401  (fixture)
from tests.test_kubelet_lifecycle import Cluster, cluster_for, sh, status_of


@pytest.fixture
async def docker_cluster(nats_url, tmp_path, busybox_image) -> AsyncIterator[Cluster]:  # noqa: F811
    async with cluster_for("docker", nats_url, tmp_path, busybox_image) as c:
        yield c


@pytest.fixture
async def process_cluster(nats_url, tmp_path) -> AsyncIterator[Cluster]:
    async with cluster_for("process", nats_url, tmp_path, BUSYBOX_TAG) as c:
        yield c


async def pod_events(c: Cluster, name: str) -> list[dict[str, Any]]:
    """Every event of pod ``name`` stored so far."""
    js = c.nc.jetstream()
    sub = await js.subscribe(f"kyb.events.default.Pod.{name}", ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    out = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                return out
            out.append(json.loads(msg.data))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def data_volume(c: Cluster) -> dict[str, Any]:
    return {"volumes": [{"name": "data", "hostPath": {"path": str(c.data)}}]}


def mounted(**container: Any) -> dict[str, Any]:
    return {"volumeMounts": [{"name": "data", "mountPath": "/data"}], **container}


def done(p: Pod) -> bool:
    return p.status.phase in ("Succeeded", "Failed")


def proc_status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


# --- docker ----------------------------------------------------------------------------------


SELF = "id > /data/$N.id; cat /proc/self/status > /data/$N.status; (touch /rootfs-probe && echo rw || echo ro) > /data/$N.root"


@pytest.mark.docker
async def test_docker_applies_users_groups_capabilities_and_seccomp(docker_cluster: Cluster):
    c = docker_cluster
    profiles = Path(c.options["state_dir"]) / "seccomp" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "allow.json").write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    locked = {"runAsUser": 1000, "runAsGroup": 2000, "readOnlyRootFilesystem": True,
              "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    manifest = c.pod_manifest("secure", [
        mounted(name="locked", env=[{"name": "N", "value": "locked"}], securityContext=locked, **sh(SELF)),
        mounted(name="open", env=[{"name": "N", "value": "open"}],
                securityContext={"seccompProfile": {"type": "Unconfined"}, "capabilities": {"add": ["NET_ADMIN"]}},
                **sh(SELF)),
        mounted(name="local", env=[{"name": "N", "value": "local"}],
                securityContext={"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/allow.json"}},
                **sh(SELF)),
    ], restartPolicy="Never", securityContext={
        "seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": False, "fsGroup": 3000,
        "supplementalGroups": [4000]}, **data_volume(c))
    await c.apply(manifest)
    pod = await c.wait_pod("secure", done, 60)
    assert pod.status.phase == "Succeeded", pod.status

    locked_id = (c.data / "locked.id").read_text()
    assert locked_id.startswith("uid=1000 gid=2000"), locked_id
    assert "4000" in locked_id and "3000" in locked_id  # supplementalGroups, then fsGroup
    st = proc_status((c.data / "locked.status").read_text())
    assert st["CapEff"].strip() == "0000000000000000"
    assert st["NoNewPrivs"].strip() == "1"
    assert st["Seccomp"].strip() == "2"  # the pod's RuntimeDefault: Docker's default profile
    assert (c.data / "locked.root").read_text().strip() == "ro"

    st = proc_status((c.data / "open.status").read_text())
    assert st["Seccomp"].strip() == "0"  # the container's Unconfined overrides the pod's profile
    assert int(st["CapEff"], 16) & (1 << 12), "NET_ADMIN added"
    assert st["NoNewPrivs"].strip() == "0"
    assert (c.data / "open.id").read_text().startswith("uid=0(root)")
    assert (c.data / "open.root").read_text().strip() == "rw"
    assert proc_status((c.data / "local.status").read_text())["Seccomp"].strip() == "2"


@pytest.mark.docker
async def test_a_missing_localhost_profile_keeps_the_container_from_starting_until_it_exists(docker_cluster: Cluster):
    c = docker_cluster
    sc = {"seccompProfile": {"type": "Localhost", "localhostProfile": "later.json"}}
    await c.apply(c.pod_manifest("later", [{"name": "app", "securityContext": sc, **sh("exit 0")}], restartPolicy="Never"))

    def refused(p: Pod) -> bool:
        w = status_of(p, "app").state.waiting if p.status.containerStatuses else None
        return w is not None and w.reason == "CreateContainerError"

    pod = await c.wait_pod("later", refused, 30)
    path = Path(c.options["state_dir"]) / "seccomp" / "later.json"
    assert str(path) in status_of(pod, "app").state.waiting.message
    failed = [e for e in await pod_events(c, "later") if e["reason"] == "Failed"]
    assert failed and "cannot load seccomp profile" in failed[0]["message"] and failed[0]["type"] == "Warning"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    pod = await c.wait_pod("later", done, 30)  # retried after its back-off
    assert pod.status.phase == "Succeeded"


@pytest.mark.docker
async def test_share_process_namespace_lets_containers_see_each_others_processes(docker_cluster: Cluster):
    c = docker_cluster
    watcher = ("i=0; while [ $i -lt 300 ]; do ps > /data/ps.$S; grep -q '[s]leep 4242' /data/ps.$S && exit 0; "
               "i=$((i+1)); sleep 0.1; done; exit 1")
    for name, share in (("shared", True), ("apart", False)):
        await c.apply(c.pod_manifest(name, [
            {"name": "sleeper", **sh("exec sleep 4242")},
            mounted(name="watcher", env=[{"name": "S", "value": name}], **sh(watcher if share else
                    "ps > /data/ps.$S; grep -q '[s]leep 4242' /data/ps.$S && exit 1; exit 0")),
        ], shareProcessNamespace=share, restartPolicy="Never", **data_volume(c)))

    def watcher_done(p: Pod) -> bool:
        return bool(p.status.containerStatuses) and status_of(p, "watcher").state.terminated is not None

    for name in ("shared", "apart"):
        pod = await c.wait_pod(name, watcher_done, 60)
        assert status_of(pod, "watcher").state.terminated.exitCode == 0, (c.data / f"ps.{name}").read_text()
    assert "sleep 4242" in (c.data / "ps.shared").read_text()


@pytest.mark.docker
async def test_the_kubelet_refuses_what_it_cannot_enforce(docker_cluster: Cluster):
    c = docker_cluster
    await c.apply(c.pod_manifest("unsafe", [{"name": "app", **sh("exit 0")}],
                                 securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}))
    pod = await c.wait_pod("unsafe", done, 30)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "SysctlForbidden")
    assert pod.status.message == 'Pod was rejected: forbidden sysctl: "kernel.msgmax" not allowlisted'
    assert not pod.status.containerStatuses
    events = await pod_events(c, "unsafe")
    assert [(e["type"], e["reason"]) for e in events if e["reason"] == "SysctlForbidden"] == [("Warning", "SysctlForbidden")]

    if host_apparmor_enabled():
        pytest.skip("this host enforces AppArmor: nothing to refuse")
    sc = {"appArmorProfile": {"type": "RuntimeDefault"}}
    await c.apply(c.pod_manifest("armored", [{"name": "app", "securityContext": sc, **sh("exit 0")}]))
    pod = await c.wait_pod("armored", done, 30)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "AppArmor")
    assert pod.status.message == "Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host"
    warned = [e for e in await pod_events(c, "armored") if e["reason"] == "AppArmor"]
    assert [e["type"] for e in warned] == ["Warning"]


@pytest.mark.docker
async def test_safe_sysctls_are_set_and_run_as_non_root_is_verified(docker_cluster: Cluster):
    c = docker_cluster
    await c.apply(c.pod_manifest("tuned", [
        mounted(name="app", **sh("cat /proc/sys/net/ipv4/ip_unprivileged_port_start > /data/port-start; "
                                 "cat /proc/sys/kernel/shm_rmid_forced > /data/shm-rmid")),
    ], restartPolicy="Never", securityContext={"sysctls": [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"},
        {"name": "kernel.shm_rmid_forced", "value": "1"},  # IPC: the app container is in the sandbox's namespace
    ]}, **data_volume(c)))
    pod = await c.wait_pod("tuned", done, 30)
    assert pod.status.phase == "Succeeded"
    assert (c.data / "port-start").read_text().strip() == "80"
    assert (c.data / "shm-rmid").read_text().strip() == "1"

    await c.apply(c.pod_manifest("rooted", [{"name": "app", **sh("exit 0")}], securityContext={"runAsNonRoot": True}))

    def config_error(p: Pod) -> bool:
        w = status_of(p, "app").state.waiting if p.status.containerStatuses else None
        return w is not None and w.reason == "CreateContainerConfigError"

    pod = await c.wait_pod("rooted", config_error, 30)
    assert status_of(pod, "app").state.waiting.message.startswith("container has runAsNonRoot and image will run as root")
    manifest = c.pod_manifest("nonroot", [{"name": "app", **sh("exit 0")}], restartPolicy="Never",
                              securityContext={"runAsNonRoot": True, "runAsUser": 65534})
    await c.apply(manifest)
    assert (await c.wait_pod("nonroot", done, 30)).status.phase == "Succeeded"


# --- process runtime -------------------------------------------------------------------------


async def test_the_process_runtime_says_once_what_it_cannot_apply(process_cluster: Cluster):
    c = process_cluster
    manifest = c.pod_manifest("helm", [
        {"name": "app", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": True,
                                            "capabilities": {"drop": ["ALL"]}},
         "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}], **sh("exit 0")},
    ], restartPolicy="Never", hostUsers=False, shareProcessNamespace=True,
        securityContext={"seccompProfile": {"type": "RuntimeDefault"}, "appArmorProfile": {"type": "RuntimeDefault"},
                         "runAsUser": 1000})
    await c.apply(manifest)
    pod = await c.wait_pod("helm", done, 30)
    assert pod.status.phase == "Succeeded"  # accepted and run, not refused
    noted = [e for e in await pod_events(c, "helm") if e["reason"] == "FieldsNotEffective"]
    assert len(noted) == 1 and noted[0]["type"] == "Warning"
    message = noted[0]["message"]
    for field in ("spec.securityContext.seccompProfile", "spec.securityContext.appArmorProfile",
                  "spec.securityContext.runAsUser", "spec.containers[0].securityContext.capabilities",
                  "spec.containers[0].securityContext.runAsNonRoot", "spec.hostUsers",
                  "spec.containers[0].resizePolicy", "spec.shareProcessNamespace"):
        assert field in message, field
