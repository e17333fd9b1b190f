"""What starting a container brings, as a user sees it in `kubectl describe pod` and in the
container the runtime is asked for: services/kubelet/startplan.py."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.meta import ObjectMeta
from schemas.pod import (
    AppArmorProfile,
    Capabilities,
    Container,
    ContainerPort,
    Pod,
    PodSecurityContext,
    PodSpec,
    ResourceRequirements,
    SeccompProfile,
    SecurityContext,
    Sysctl,
)
from services.kubelet import startplan
from services.kubelet.reconcile import Failure, Settings
from services.kubelet.runtime.base import ContainerSecurity, Mount
from services.kubelet.runtime.docker import non_root_problem, security_options, user_spec

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


# --- security: what each runtime is asked to apply, and what the kubelet refuses --------------

PROFILE_TYPES = ("RuntimeDefault", "Unconfined", "Localhost")


def secured(pod_sc: PodSecurityContext | None = None, sc: SecurityContext | None = None, **spec: object) -> Pod:
    pod = make_pod(securityContext=sc)
    return msgspec.structs.replace(pod, spec=msgspec.structs.replace(pod.spec, securityContext=pod_sc, **spec))


def test_the_containers_security_context_over_the_pods_becomes_the_runtimes() -> None:
    pod = secured(PodSecurityContext(runAsUser=1000, runAsGroup=2000, fsGroup=3000, supplementalGroups=[4000, 3000],
                                     runAsNonRoot=True, seccompProfile=SeccompProfile(type="RuntimeDefault")),
                  SecurityContext(runAsUser=1001, readOnlyRootFilesystem=True, allowPrivilegeEscalation=False,
                                  capabilities=Capabilities(add=["NET_ADMIN"], drop=["ALL"]),
                                  seccompProfile=SeccompProfile(type="Localhost", localhostProfile="p/a.json")))
    sec = startplan.container_security(pod, pod.spec.containers[0], "/var/lib/kyb/seccomp/")
    assert sec == ContainerSecurity(user=1001, group=2000, supplemental_groups=(4000, 3000), run_as_non_root=True,
                                    read_only_root=True, no_new_privileges=True, cap_add=("NET_ADMIN",),
                                    cap_drop=("ALL",), seccomp="/var/lib/kyb/seccomp/p/a.json")
    init = startplan.container_security(pod, pod.spec.initContainers[0], "/s")
    assert (init.user, init.seccomp, init.no_new_privileges) == (1000, None, False)  # RuntimeDefault: the engine's


@given(st.sampled_from((None, *PROFILE_TYPES)), st.sampled_from((None, *PROFILE_TYPES)), st.booleans())
def test_a_containers_profile_overrides_its_pods(pod_type, container_type, apparmor) -> None:
    def profile(t: str | None) -> SeccompProfile | AppArmorProfile | None:
        if t is None:
            return None
        cls = AppArmorProfile if apparmor else SeccompProfile
        return cls(type=t, localhostProfile="x" if t == "Localhost" else None)  # type: ignore[arg-type]

    field = "appArmorProfile" if apparmor else "seccompProfile"
    pod = secured(PodSecurityContext(**{field: profile(pod_type)}), SecurityContext(**{field: profile(container_type)}))
    sec = startplan.container_security(pod, pod.spec.containers[0], "/s")
    chosen = container_type or pod_type
    got = sec.apparmor if apparmor else sec.seccomp
    want = {None: None, "RuntimeDefault": None, "Unconfined": "unconfined", "Localhost": "x" if apparmor else "/s/x"}
    assert got == want[chosen]
    assert (sec.seccomp if apparmor else sec.apparmor) is None


def test_docker_security_options_user_and_non_root_check() -> None:
    sec = ContainerSecurity(seccomp="/s/p.json", apparmor="unconfined", no_new_privileges=True)
    assert security_options(sec, '{"defaultAction":"SCMP_ACT_ALLOW"}') == [
        'seccomp={"defaultAction":"SCMP_ACT_ALLOW"}', "apparmor=unconfined", "no-new-privileges:true"]
    assert security_options(ContainerSecurity(seccomp="unconfined"), None) == ["seccomp=unconfined"]
    assert security_options(ContainerSecurity(), None) == []
    assert user_spec(ContainerSecurity(), "nobody") is None
    assert user_spec(ContainerSecurity(user=5), "") == "5"
    assert user_spec(ContainerSecurity(user=5, group=6), "") == "5:6"
    assert user_spec(ContainerSecurity(group=6), "nobody:nogroup") == "nobody:6"
    assert user_spec(ContainerSecurity(group=6), "") == "0:6"
    strict = ContainerSecurity(run_as_non_root=True)
    assert non_root_problem(ContainerSecurity(), "") is None
    assert non_root_problem(strict, "") == "container has runAsNonRoot and image will run as root"
    assert non_root_problem(strict, "root") == "container has runAsNonRoot and image will run as root"
    assert non_root_problem(strict, "1000:1000") is None
    assert "non-numeric user (nobody)" in (non_root_problem(strict, "nobody") or "")
    assert non_root_problem(ContainerSecurity(run_as_non_root=True, user=0), "1000") == \
        "container's runAsUser breaks non-root policy"
    assert non_root_problem(ContainerSecurity(run_as_non_root=True, user=7), "root") is None


@pytest.mark.parametrize(
    ("kw", "runtime", "apparmor", "want"),
    [
        pytest.param({}, "docker", False, None, id="nothing-asked"),
        pytest.param({"sc": SecurityContext(appArmorProfile=AppArmorProfile(type="RuntimeDefault"))}, "docker", False,
                     ("AppArmor", "Cannot enforce AppArmor: AppArmor is not enabled on the host"), id="apparmor-missing"),
        pytest.param({"sc": SecurityContext(appArmorProfile=AppArmorProfile(type="RuntimeDefault"))}, "docker", True,
                     None, id="apparmor-present"),
        pytest.param({"pod_sc": PodSecurityContext(appArmorProfile=AppArmorProfile(type="Unconfined"))}, "docker",
                     False, None, id="unconfined-needs-nothing"),
        pytest.param({"sc": SecurityContext(appArmorProfile=AppArmorProfile(type="Localhost", localhostProfile="p"))},
                     "process", False, None, id="process-runtime-warns-instead"),
        pytest.param({"pod_sc": PodSecurityContext(sysctls=[Sysctl(name="kernel.msgmax", value="1")])}, "docker",
                     True, ("SysctlForbidden", 'forbidden sysctl: "kernel.msgmax" not allowlisted'), id="unsafe-sysctl"),
        pytest.param({"pod_sc": PodSecurityContext(sysctls=[Sysctl(name="net/ipv4/tcp_syncookies", value="1")]),
                      "hostNetwork": True}, "docker", True,
                     ("SysctlForbidden", 'forbidden sysctl: "net.ipv4.tcp_syncookies" not allowed with host net enabled'),
                     id="net-sysctl-on-host-network"),
        pytest.param({"pod_sc": PodSecurityContext(sysctls=[Sysctl(name="net.ipv4.tcp_syncookies", value="1")])},
                     "docker", True, None, id="safe-sysctl"),
    ],
)
def test_the_kubelet_admits_only_what_it_can_enforce(kw, runtime, apparmor, want) -> None:
    pod = secured(kw.pop("pod_sc", None), kw.pop("sc", None), **kw)
    assert startplan.admission(pod, runtime=runtime, apparmor_enabled=apparmor) == want
    if want is not None:
        status = startplan.rejected_status(pod, *want)
        assert (status.phase, status.reason, status.message) == ("Failed", want[0], f"Pod was rejected: {want[1]}")
        assert startplan.rejected(msgspec.structs.replace(pod, status=status))


def test_sysctls_go_to_the_sandbox_with_kubernetes_names() -> None:
    pod = secured(PodSecurityContext(sysctls=[Sysctl(name="net/ipv4/ip_local_port_range", value="1024 65000"),
                                              Sysctl(name="kernel.shm_rmid_forced", value="1")]))
    assert startplan.sandbox_config(pod, "10.0.0.1", "none").sysctls == {
        "net.ipv4.ip_local_port_range": "1024 65000", "kernel.shm_rmid_forced": "1"}
    assert startplan.sysctl_name("a/b.c/d") == "a.b/c.d"


def test_what_is_not_effective_is_said_per_runtime() -> None:
    pod = secured(PodSecurityContext(runAsUser=1, seccompProfile=SeccompProfile(type="RuntimeDefault"), fsGroup=5,
                                     supplementalGroupsPolicy="Strict"),
                  SecurityContext(capabilities=Capabilities(drop=["ALL"])), hostUsers=False, shareProcessNamespace=True)
    process = startplan.not_effective_event(pod, "process")
    assert process is not None and (process.type, process.reason) == ("Warning", "FieldsNotEffective")
    for field in ("spec.hostUsers", "spec.securityContext.runAsUser", "spec.securityContext.seccompProfile",
                  "spec.containers[0].securityContext.capabilities", "spec.shareProcessNamespace"):
        assert field in process.message
    docker = startplan.not_effective_event(pod, "docker")
    assert docker is not None
    assert "spec.hostUsers" in docker.message and "supplementalGroupsPolicy" in docker.message
    assert "seccompProfile" not in docker.message and "shareProcessNamespace" not in docker.message
    host = startplan.not_effective_event(secured(None, None, hostPID=True), "docker")
    assert host is not None and "spec.hostPID" in host.message
    assert startplan.not_effective_event(secured(None, None, hostPID=True), "process") is None
    assert startplan.not_effective_event(make_pod(), "process") is None
    assert startplan.not_effective_event(make_pod(), "docker") is None


@given(st.lists(st.sampled_from(["runAsUser", "runAsNonRoot", "privileged", "readOnlyRootFilesystem"]), unique=True))
def test_the_process_runtime_names_every_security_field_set(fields) -> None:
    values = {"runAsUser": 1, "runAsNonRoot": True, "privileged": True, "readOnlyRootFilesystem": True}
    pod = secured(None, SecurityContext(**{f: values[f] for f in fields}))
    event = startplan.not_effective_event(pod, "process")
    assert (event is None) == (not fields)
    for f in fields:
        assert event is not None and f"spec.containers[0].securityContext.{f}" in event.message


def test_the_deprecated_apparmor_annotation_counts_where_the_fields_are_unset() -> None:
    pod = make_pod()
    annotated = msgspec.structs.replace(pod, metadata=msgspec.structs.replace(pod.metadata, annotations={
        "container.apparmor.security.beta.kubernetes.io/app": "localhost/k8s-example"}))
    assert startplan.container_security(annotated, annotated.spec.containers[0], "/s").apparmor == "k8s-example"
    assert startplan.container_security(annotated, annotated.spec.initContainers[0], "/s").apparmor is None
    assert startplan.admission(annotated, runtime="docker", apparmor_enabled=False) == (
        "AppArmor", "Cannot enforce AppArmor: AppArmor is not enabled on the host")
    field = msgspec.structs.replace(annotated, spec=msgspec.structs.replace(annotated.spec, containers=[
        Container(name="app", image="busybox:1",
                  securityContext=SecurityContext(appArmorProfile=AppArmorProfile(type="Unconfined")))]))
    assert startplan.container_security(field, field.spec.containers[0], "/s").apparmor == "unconfined"
    assert startplan.admission(field, runtime="docker", apparmor_enabled=False) is None  # the field wins


def test_unsafe_sysctls_pass_only_when_the_kubelet_allows_them() -> None:
    pod = secured(PodSecurityContext(sysctls=[Sysctl(name="net.core.somaxconn", value="1024"),
                                              Sysctl(name="kernel.msgmax", value="65536")]))
    assert startplan.admission(pod, runtime="docker", apparmor_enabled=True) == (
        "SysctlForbidden", 'forbidden sysctl: "net.core.somaxconn" not allowlisted')
    assert startplan.admission(pod, runtime="docker", apparmor_enabled=True,
                               allowed_unsafe_sysctls=("net.core.*",)) == (
        "SysctlForbidden", 'forbidden sysctl: "kernel.msgmax" not allowlisted')
    assert startplan.admission(pod, runtime="docker", apparmor_enabled=True,
                               allowed_unsafe_sysctls=("net.core.somaxconn", "kernel.msg*")) is None
    host = secured(PodSecurityContext(sysctls=[Sysctl(name="net.core.somaxconn", value="1")]), hostNetwork=True)
    assert startplan.admission(host, runtime="docker", apparmor_enabled=True, allowed_unsafe_sysctls=("net.*",)) == (
        "SysctlForbidden", 'forbidden sysctl: "net.core.somaxconn" not allowed with host net enabled')
    assert startplan.unsafe_sysctls_problem(("net.core.*", "kernel.sem", "fs.mqueue.msg_max")) is None
    assert startplan.unsafe_sysctls_problem(("vm.overcommit_memory",)) == (
        'sysctl "vm.overcommit_memory" is not known to be namespaced')


def test_kubelet_option_allowed_unsafe_sysctls() -> None:
    from services.kubelet.service import KubeletOptions

    assert KubeletOptions.from_dict({"node_name": "n", "allowed_unsafe_sysctls": "net.core.*, kernel.msg*"}
                                    ).allowed_unsafe_sysctls == ("net.core.*", "kernel.msg*")
    assert KubeletOptions.from_dict({"node_name": "n"}).allowed_unsafe_sysctls == ()
