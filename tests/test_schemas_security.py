"""Kubernetes' validation of a pod's security fields (schemas/securitychecks.py): what Helm
charts set is accepted, and each mistake is refused naming its field, as the apiserver words it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.pod import Pod
from schemas.validation import SchemaError, decode

BASE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "default"},
    "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
}


def pod(spec: dict[str, Any] | None = None, container: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec or {})
    doc["spec"]["containers"][0].update(container or {})
    return doc


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        decode(doc)
    except SchemaError as e:
        return e.details
    return []


HELM = pod(
    {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                         "fsGroupChangePolicy": "OnRootMismatch", "supplementalGroups": [2000],
                         "supplementalGroupsPolicy": "Strict", "seccompProfile": {"type": "RuntimeDefault"},
                         "appArmorProfile": {"type": "Unconfined"}, "seLinuxOptions": {"level": "s0:c123,c456"},
                         "seLinuxChangePolicy": "MountOption",
                         "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}]},
     "shareProcessNamespace": True, "hostUsers": False, "schedulingGates": [{"name": "example.com/wait"}]},
    {"securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
                         "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}, "procMount": "Unmasked",
                         "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"},
                         "appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-apparmor-example"},
                         "windowsOptions": {"runAsUserName": "ContainerUser"}},
     "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"},
                      {"resourceName": "memory", "restartPolicy": "RestartContainer"}]},
)


def test_what_helm_charts_set_is_accepted_and_kept() -> None:
    obj = decode(HELM)
    assert isinstance(obj, Pod)
    sc = obj.spec.securityContext
    assert sc is not None and sc.seccompProfile is not None and sc.seccompProfile.type == "RuntimeDefault"
    csc = obj.spec.containers[0].securityContext
    assert csc is not None and csc.seccompProfile is not None
    assert csc.seccompProfile.localhostProfile == "profiles/audit.json"
    assert [p.resourceName for p in obj.spec.containers[0].resizePolicy] == ["cpu", "memory"]
    assert (obj.spec.shareProcessNamespace, obj.spec.hostUsers) == (True, False)


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        pytest.param(pod({"securityContext": {"runAsUser": -1}}), "spec.securityContext.runAsUser",
                     "Invalid value: -1: must be between 0 and 2147483647, inclusive", id="negative-uid"),
        pytest.param(pod(container={"securityContext": {"runAsGroup": 2147483648}}),
                     "spec.containers[0].securityContext.runAsGroup",
                     "Invalid value: 2147483648: must be between 0 and 2147483647, inclusive", id="gid-too-large"),
        pytest.param(pod({"securityContext": {"supplementalGroups": [1, -5]}}),
                     "spec.securityContext.supplementalGroups[1]", None, id="bad-supplemental-group"),
        pytest.param(pod({"securityContext": {"seccompProfile": {"type": "Localhost"}}}),
                     "spec.securityContext.seccompProfile.localhostProfile",
                     "Required value: must be set when seccomp type is Localhost", id="localhost-without-profile"),
        pytest.param(pod({"securityContext": {"seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "x"}}}),
                     "spec.securityContext.seccompProfile.localhostProfile",
                     "Invalid value: can only be set when seccomp type is Localhost", id="profile-without-localhost"),
        pytest.param(pod(container={"securityContext": {"seccompProfile": {"type": "Localhost",
                                                                           "localhostProfile": "/etc/p.json"}}}),
                     "spec.containers[0].securityContext.seccompProfile.localhostProfile",
                     'Invalid value: "/etc/p.json": must be a relative path', id="absolute-profile"),
        pytest.param(pod(container={"securityContext": {"seccompProfile": {"type": "Localhost",
                                                                           "localhostProfile": "a/../../p"}}}),
                     "spec.containers[0].securityContext.seccompProfile.localhostProfile",
                     "Invalid value: \"a/../../p\": must not contain '..'", id="backsteps"),
        pytest.param(pod({"securityContext": {"seccompProfile": {"type": "Strict"}}}),
                     "spec.securityContext.seccompProfile.type", None, id="unknown-type"),
        pytest.param(pod({"securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": " p"}}}),
                     "spec.securityContext.appArmorProfile.localhostProfile",
                     'Invalid value: " p": must not be padded with whitespace', id="apparmor-padded"),
        pytest.param(pod(container={"securityContext": {"appArmorProfile": {"type": "Localhost"}}}),
                     "spec.containers[0].securityContext.appArmorProfile.localhostProfile",
                     "Required value: must be set when AppArmor type is Localhost", id="apparmor-localhost"),
        pytest.param(pod(container={"securityContext": {"allowPrivilegeEscalation": False, "privileged": True}}),
                     "spec.containers[0].securityContext",
                     "Invalid value: cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
                     id="privileged-without-escalation"),
        pytest.param(pod(container={"securityContext": {"allowPrivilegeEscalation": False,
                                                        "capabilities": {"add": ["CAP_SYS_ADMIN"]}}}),
                     "spec.containers[0].securityContext", None, id="sys-admin-without-escalation"),
        pytest.param(pod(container={"securityContext": {"procMount": "Unmasked"}}),
                     "spec.containers[0].securityContext.procMount",
                     'Invalid value: "Unmasked": `hostUsers` must be false to use `Unmasked`', id="unmasked"),
        pytest.param(pod({"securityContext": {"sysctls": [{"name": "Net.Bad", "value": "1"}]}}),
                     "spec.securityContext.sysctls[0].name", None, id="sysctl-name"),
        pytest.param(pod({"securityContext": {"sysctls": [{"name": "net.a", "value": "1"},
                                                          {"name": "net.a", "value": "2"}]}}),
                     "spec.securityContext.sysctls[1].name", 'Duplicate value: "net.a"', id="sysctl-twice"),
        pytest.param(pod({"securityContext": {"fsGroupChangePolicy": "Sometimes"}}),
                     "spec.securityContext.fsGroupChangePolicy", None, id="fsgroup-policy"),
        pytest.param(pod({"securityContext": {"supplementalGroupsPolicy": "Loose"}}),
                     "spec.securityContext.supplementalGroupsPolicy", None, id="groups-policy"),
        pytest.param(pod({"shareProcessNamespace": True, "hostPID": True}), "spec.shareProcessNamespace",
                     "Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled", id="share-and-host-pid"),
        pytest.param(pod({"hostUsers": False, "hostNetwork": True}), "spec.hostNetwork",
                     "Forbidden: when `hostUsers` is false", id="userns-and-host-network"),
        pytest.param(pod(container={"resizePolicy": [{"resourceName": "gpu", "restartPolicy": "NotRequired"}]}),
                     "spec.containers[0].resizePolicy[0].resourceName", None, id="resize-resource"),
        pytest.param(pod(container={"resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"},
                                                     {"resourceName": "cpu", "restartPolicy": "NotRequired"}]}),
                     "spec.containers[0].resizePolicy[1]", 'Duplicate value: "cpu"', id="resize-twice"),
        pytest.param(pod({"restartPolicy": "Never"},
                         {"resizePolicy": [{"resourceName": "memory", "restartPolicy": "RestartContainer"}]}),
                     "spec.containers[0].resizePolicy",
                     "Invalid value: must be 'NotRequired' when `restartPolicy` is 'Never'", id="resize-never"),
        pytest.param(pod({"initContainers": [{"name": "i", "image": "busybox:1", "resizePolicy": [
            {"resourceName": "cpu", "restartPolicy": "NotRequired"}]}]}),
                     "spec.initContainers[0].resizePolicy", "Invalid value: must not be set for init containers",
                     id="resize-init"),
        pytest.param(pod(container={"securityContext": {"windowsOptions": {"runAsUserName": ""}}}),
                     "spec.containers[0].securityContext.windowsOptions.runAsUserName", None, id="windows-user"),
        pytest.param(pod({"hostUsers": "no"}), "spec.hostUsers", None, id="host-users-type"),
    ],
)
def test_mistakes_are_refused_naming_the_field(doc, field, message) -> None:
    found = problems(doc)
    assert [f for f, _ in found] == [field], found
    assert message is None or found[0][1] == message


def test_templates_are_checked_alike() -> None:
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
              "spec": {"selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}},
                                    "spec": {**pod({"securityContext": {"seccompProfile": {"type": "Localhost"}}})["spec"],
                                             "schedulingGates": [{"name": "g"}]}}}}
    assert [f for f, _ in problems(deploy)] == ["spec.template.spec.securityContext.seccompProfile.localhostProfile"]


@given(st.sampled_from(["RuntimeDefault", "Unconfined", "Localhost"]),
       st.one_of(st.none(), st.sampled_from(["p.json", "dir/p.json"])), st.booleans(), st.booleans())
def test_a_profile_is_refused_exactly_when_type_and_localhost_profile_disagree(type_, profile, apparmor, in_container):
    field = "appArmorProfile" if apparmor else "seccompProfile"
    value: dict[str, Any] = {"type": type_} | ({"localhostProfile": profile} if profile is not None else {})
    doc = pod(container={"securityContext": {field: value}}) if in_container else pod({"securityContext": {field: value}})
    found = problems(doc)
    assert bool(found) == ((type_ == "Localhost") != (profile is not None))
    where = "spec.containers[0].securityContext" if in_container else "spec.securityContext"
    assert all(f == f"{where}.{field}.localhostProfile" for f, _ in found)


@given(st.integers(min_value=-(2**33), max_value=2**33))
def test_ids_are_refused_exactly_outside_0_to_2_pow_31(uid):
    found = problems(pod({"securityContext": {"runAsUser": uid, "fsGroup": uid}}))
    assert bool(found) == (not 0 <= uid <= 2**31 - 1)
    assert {f for f, _ in found} <= {"spec.securityContext.runAsUser", "spec.securityContext.fsGroup"}


@pytest.mark.parametrize(
    ("annotations", "want"),
    [
        pytest.param({"container.apparmor.security.beta.kubernetes.io/c": "runtime/default"}, [], id="runtime-default"),
        pytest.param({"container.apparmor.security.beta.kubernetes.io/c": "localhost/k8s-example"}, [], id="localhost"),
        pytest.param({"container.apparmor.security.beta.kubernetes.io/c": "docker-default"},
                     [("metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]",
                       'Invalid value: "docker-default": invalid AppArmor profile name: "docker-default"')],
                     id="bad-profile"),
        pytest.param({"container.apparmor.security.beta.kubernetes.io/other": "unconfined"},
                     [("metadata.annotations[container.apparmor.security.beta.kubernetes.io/other]",
                       'Invalid value: "other": container not found')], id="no-such-container"),
    ],
)
def test_the_deprecated_apparmor_annotations_are_validated(annotations, want) -> None:
    doc = pod()
    doc["metadata"]["annotations"] = annotations
    assert problems(doc) == want


_text = st.text(max_size=12)


@given(
    gates=st.lists(_text, max_size=4),
    sysctls=st.lists(st.tuples(_text, _text), max_size=4),
    profile=st.one_of(st.none(), _text),
    ids=st.lists(st.integers(min_value=-(2**40), max_value=2**40), min_size=3, max_size=3),
    annotation=st.tuples(_text, _text),
)
def test_any_security_input_is_judged_without_crashing_and_named_under_its_field(gates, sysctls, profile, ids,
                                                                                  annotation):
    doc = pod({"schedulingGates": [{"name": g} for g in gates],
               "securityContext": {"sysctls": [{"name": n, "value": v} for n, v in sysctls],
                                   "runAsUser": ids[0], "fsGroup": ids[1], "supplementalGroups": [ids[2]]}},
              {"securityContext": {"seccompProfile": {"type": "Localhost"} | (
                  {"localhostProfile": profile} if profile is not None else {}),
                  "appArmorProfile": {"type": "Localhost", "localhostProfile": profile or "x"}}})
    doc["metadata"]["annotations"] = {f"container.apparmor.security.beta.kubernetes.io/{annotation[0]}": annotation[1]}
    for field, _ in problems(doc):
        assert field.startswith(("spec.schedulingGates[", "spec.securityContext.", "spec.containers[0].securityContext.",
                                 "metadata.annotations[")), field
