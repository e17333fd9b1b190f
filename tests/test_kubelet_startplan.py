"""What starting a container brings, as a user sees it in `kubectl describe pod` and in the
container the runtime is asked for: services/kubelet/startplan.py."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from schemas.meta import ObjectMeta
from schemas.pod import Container, ContainerPort, Pod, PodSpec, ResourceRequirements
from services.kubelet import startplan
from services.kubelet.reconcile import Failure, Settings
from services.kubelet.runtime.base import Mount

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SET = Settings(base_backoff=10, max_backoff=300)


def make_pod(*, host_network: bool = False, image: str = "busybox:1.36", **container: object) -> Pod:
    return Pod(
        metadata=ObjectMeta(name="web", namespace="shop", uid="u1"),
        spec=PodSpec(nodeName="n1", hostNetwork=host_network, hostname="",
                     initContainers=[Container(name="init", image=image)],
                     containers=[Container(name="app", image=image, **container)]),
    )


def test_finds_app_and_init_containers_by_name() -> None:
    pod = make_pod()
    assert startplan.container(pod, "init") is pod.spec.initContainers[0]
    assert startplan.container(pod, "app") is pod.spec.containers[0]
    assert startplan.container(pod, "other") is None


def test_sandbox_network_follows_host_network_only_with_cni() -> None:
    assert startplan.sandbox_network(make_pod(host_network=True), cni=False) == "loopback"
    assert startplan.sandbox_network(make_pod(host_network=True), cni=True) == "host"
    assert startplan.sandbox_network(make_pod(), cni=True) == "none"


def test_sandbox_carries_the_declared_ports_with_sctp_as_tcp() -> None:
    pod = make_pod(ports=[ContainerPort(containerPort=80, hostPort=8080, hostIP="127.0.0.2"),
                          ContainerPort(containerPort=9, protocol="SCTP")])
    cfg = startplan.sandbox_config(pod, "10.244.0.5", "none", "/r", "/h")
    assert (cfg.pod_uid, cfg.namespace, cfg.hostname, cfg.pod_ip) == ("u1", "shop", "web", "10.244.0.5")
    assert [(p.container_port, p.protocol, p.host_port, p.host_ip) for p in cfg.ports] == [
        (80, "TCP", 8080, "127.0.0.2"), (9, "TCP", None, None)]
    assert (cfg.resolv_conf, cfg.hosts_file, cfg.network) == ("/r", "/h", "none")


def test_downward_api_sees_the_addresses_before_the_status_write() -> None:
    pod = make_pod()
    seen = startplan.with_addresses(pod, "10.244.0.5", "192.0.2.1")
    assert (seen.status.podIP, seen.status.hostIP) == ("10.244.0.5", "192.0.2.1")
    assert pod.status.podIP == ""  # the pod itself is left alone


def test_latest_images_are_pulled_every_time_with_pulling_and_pulled_events() -> None:
    latest = make_pod(image="busybox").spec.containers[0]
    policy = startplan.pull_policy(latest)
    assert policy == "Always"
    assert [(e.reason, e.message) for e in startplan.pulling_events(latest, policy)] == [
        ("Pulling", 'Pulling image "busybox"')]
    assert startplan.pulled_event(latest, policy).message == 'Successfully pulled image "busybox"'
    tagged = make_pod().spec.containers[0]
    assert startplan.pull_policy(tagged) == "IfNotPresent"
    assert startplan.pulling_events(tagged, "IfNotPresent") == ()
    assert startplan.pulled_event(tagged, "IfNotPresent").message == (
        'Container image "busybox:1.36" already present on machine')


@given(st.integers(min_value=0, max_value=12))
def test_pull_back_off_doubles_for_the_same_reason_up_to_the_cap(times: int) -> None:
    c = make_pod().spec.containers[0]
    previous: Failure | None = None
    for _ in range(times + 1):
        events, previous = startplan.pull_failure(c, "ErrImagePull", "not found", previous, SET, T0)
    assert previous is not None
    assert previous.backoff == min(10 * 2**times, 300)
    assert [(e.type, e.message) for e in events] == [
        ("Warning", 'Failed to pull image "busybox:1.36": not found'), ("Warning", "Error: ErrImagePull")]
    _, other = startplan.pull_failure(c, "ErrImageNeverPull", "never", previous, SET, T0)
    assert other.backoff == 10  # another kind of failure starts over


def test_config_and_mount_failures_wait_for_the_next_sync_without_back_off() -> None:
    event, failure = startplan.config_failure('configmap "app" not found', T0)
    assert (event.type, event.reason, event.message) == ("Warning", "Failed", 'Error: configmap "app" not found')
    assert (failure.reason, failure.backoff) == ("CreateContainerConfigError", 0.0)
    event, failure = startplan.mount_failure("no such volume", T0)
    assert (event.reason, failure.reason) == ("FailedMount", "ContainerCreating")
    assert failure.message == event.message == "MountVolume.SetUp failed: no such volume"


def test_container_config_takes_limits_command_and_mounts() -> None:
    c = make_pod(workingDir="/srv", resources=ResourceRequirements(limits={"cpu": "500m", "memory": "64Mi"})
                 ).spec.containers[0]
    mounts = (Mount("/host", "/data", read_only=True),)
    cfg = startplan.container_config(c, {"A": "1"}, ("sh",), ("-c", "true"), mounts, "IfNotPresent", 3)
    assert (cfg.cpu_limit_millis, cfg.memory_limit_bytes) == (500, 64 * 2**20)
    assert (cfg.command, cfg.args, cfg.env, cfg.working_dir) == (("sh",), ("-c", "true"), {"A": "1"}, "/srv")
    assert (cfg.mounts, cfg.attempt, cfg.image_pull_policy) == (mounts, 3, "IfNotPresent")
    bare = startplan.container_config(make_pod().spec.containers[0], {}, (), (), (), "Always", 0)
    assert (bare.cpu_limit_millis, bare.memory_limit_bytes, bare.working_dir) == (None, None, None)


@given(st.integers(min_value=0, max_value=20))
def test_failed_network_setup_backs_off_per_failure(failures: int) -> None:
    event, delay = startplan.sandbox_failure("plugin said no", failures, SET)
    assert event.reason == "FailedCreatePodSandBox" and event.type == "Warning"
    assert event.message.endswith("failed to set up the pod network: plugin said no")
    assert delay == min(10 * 2**failures, 300)


def test_started_and_post_start_kill_name_the_container() -> None:
    c = make_pod().spec.containers[0]
    assert [e.message for e in startplan.started_events(c)] == ["Created container app", "Started container app"]
    kill = startplan.post_start_kill(c, "abc")
    assert (kill.container_id, kill.name, kill.reason) == ("abc", "app", "Killing")
