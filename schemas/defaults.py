"""Kubernetes defaulting: what the API server fills in before an object is stored.

Unconditional defaults (replicas 1, restartPolicy Always, probe periods, protocol TCP, ...) are
struct field defaults, so they hold for every decoded or constructed object. This module adds
the ones that depend on other fields: imagePullPolicy from the image tag, rolling-update
parameters for the RollingUpdate strategy, a Service port's targetPort, Job completions,
a ReplicationController's selector, Secret stringData, an RBAC binding's roleRef and subject
apiGroups, a LimitRange's Container defaults. ``apply_defaults`` never mutates its argument; it returns a new object.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from fractions import Fraction
from typing import Any, TypeVar

from msgspec.structs import replace

from schemas.apiextensions import CustomResourceDefinition, default_crd
from schemas.apps import (
    DaemonSet,
    Deployment,
    ReplicaSet,
    RollingUpdateDaemonSet,
    RollingUpdateDeployment,
    RollingUpdateStatefulSetStrategy,
    StatefulSet,
)
from schemas.batch import CronJob, Job
from schemas.core import ReplicationController, Secret, Service
from schemas.helpers import POD_LEVEL_RESOURCES, pod_resources
from schemas.limitrange import LimitRange
from schemas.limitrange import default as _limit_range
from schemas.meta import Object
from schemas.netpolicy import default as _network_policy
from schemas.networking import NetworkPolicy
from schemas.pod import (
    Container,
    EmptyDirVolumeSource,
    Pod,
    PodCondition,
    PodSpec,
    PodTemplateSpec,
    PullPolicy,
    ResourceRequirements,
    Volume,
)
from schemas.quantity import format_quantity, is_quantity, parse_quantity
from schemas.rbac import ClusterRoleBinding, RoleBinding, default_binding

T = TypeVar("T", bound=Object)


def image_pull_policy(image: str) -> PullPolicy:
    """Always for ``:latest`` or an untagged image, else IfNotPresent (a digest counts as a tag)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "Always"
    return "Always" if last.rsplit(":", 1)[1] == "latest" else "IfNotPresent"


def _container(c: Container) -> Container:
    if c.imagePullPolicy is None:
        return replace(c, imagePullPolicy=image_pull_policy(c.image))
    return c


def _volume(v: Volume) -> Volume:
    sources = (v.emptyDir, v.hostPath, v.configMap, v.secret, v.persistentVolumeClaim, v.downwardAPI, v.projected)
    if all(s is None for s in sources):
        return replace(v, emptyDir=EmptyDirVolumeSource())
    return v


def _pod_requests(spec: PodSpec) -> PodSpec:
    """Pod-level requests a pod with pod-level limits leaves unset, as Kubernetes'
    defaultPodRequests: the containers' aggregate (effective) requests when some container asks
    for that resource, else the pod-level limit."""
    r = spec.resources
    if r is None or not r.limits:
        return spec
    requests = dict(r.requests)
    aggregate = None
    for key, limit in r.limits.items():
        if key in requests or key not in POD_LEVEL_RESOURCES:
            continue
        if aggregate is None:
            aggregate = pod_resources(Pod(spec=spec), _effective_requests, pod_level=False)
        try:
            requests[key] = format_quantity(aggregate[key], binary=limit.endswith("i")) if key in aggregate else limit
        except ValueError:
            continue  # an unparsable quantity: validation names it
    return replace(spec, resources=replace(r, requests=requests))


def _effective_requests(r: ResourceRequirements) -> dict[str, Fraction]:
    out = {}
    for key in POD_LEVEL_RESOURCES:
        q = r.requests.get(key) or r.limits.get(key)  # a container's unset request is its limit
        if q is not None and is_quantity(q):
            out[key] = parse_quantity(q)
    return out


def pod_spec(spec: PodSpec) -> PodSpec:
    """Pod-spec defaults: imagePullPolicy by tag, an emptyDir for a volume without a source,
    pod-level requests from pod-level limits."""
    return _pod_requests(replace(
        spec,
        containers=[_container(c) for c in spec.containers],
        initContainers=[_container(c) for c in spec.initContainers],
        volumes=[_volume(v) for v in spec.volumes],
    ))


def _template(t: PodTemplateSpec) -> PodTemplateSpec:
    return replace(t, spec=pod_spec(t.spec))


def _pod(p: Pod) -> Pod:
    return with_service_account(replace(p, spec=pod_spec(p.spec)))


DEFAULT_SERVICE_ACCOUNT = "default"


def with_service_account(p: Pod) -> Pod:
    """Kubernetes' ServiceAccount admission: a pod that names no ServiceAccount runs as its
    namespace's ``default``; the deprecated ``serviceAccount`` is read when it is the only one
    set and always mirrors ``serviceAccountName``, as the v1 API shows it. Every new pod gets
    this, from a manifest or from a controller (``kyb.store.Store.create``)."""
    name = p.spec.serviceAccountName or p.spec.serviceAccount or DEFAULT_SERVICE_ACCOUNT
    if p.spec.serviceAccountName == name and p.spec.serviceAccount == name:
        return p
    return replace(p, spec=replace(p.spec, serviceAccountName=name, serviceAccount=name))


SCHEDULING_GATED = "SchedulingGated"  # the PodScheduled reason of a pod with scheduling gates
SCHEDULING_GATED_MESSAGE = "Scheduling is blocked due to non-empty scheduling gates"


def with_scheduling_gated(p: Pod) -> Pod:
    """As Kubernetes' pod strategy on create: a new pod with ``schedulingGates`` starts with
    PodScheduled=False, reason SchedulingGated (written once; the scheduler leaves the pod alone
    until its last gate is removed, then replaces the condition when it binds it)."""
    if not p.spec.schedulingGates or any(c.type == "PodScheduled" for c in p.status.conditions):
        return p
    cond = PodCondition(type="PodScheduled", status="False", reason=SCHEDULING_GATED, message=SCHEDULING_GATED_MESSAGE,
                        lastTransitionTime=p.metadata.creationTimestamp)
    return replace(p, status=replace(p.status, conditions=[*p.status.conditions, cond]))


def _deployment(d: Deployment) -> Deployment:
    strategy = d.spec.strategy
    if strategy.type == "RollingUpdate" and strategy.rollingUpdate is None:
        strategy = replace(strategy, rollingUpdate=RollingUpdateDeployment())
    return replace(d, spec=replace(d.spec, strategy=strategy, template=_template(d.spec.template)))


def _replicaset(rs: ReplicaSet) -> ReplicaSet:
    return replace(rs, spec=replace(rs.spec, template=_template(rs.spec.template)))


def _daemonset(ds: DaemonSet) -> DaemonSet:
    strategy = ds.spec.updateStrategy
    if strategy.type == "RollingUpdate" and strategy.rollingUpdate is None:
        strategy = replace(strategy, rollingUpdate=RollingUpdateDaemonSet())
    return replace(ds, spec=replace(ds.spec, updateStrategy=strategy, template=_template(ds.spec.template)))


def _statefulset(sts: StatefulSet) -> StatefulSet:
    strategy = sts.spec.updateStrategy
    if strategy.type == "RollingUpdate" and strategy.rollingUpdate is None:
        strategy = replace(strategy, rollingUpdate=RollingUpdateStatefulSetStrategy())
    return replace(sts, spec=replace(sts.spec, updateStrategy=strategy, template=_template(sts.spec.template)))


def _cronjob(cj: CronJob) -> CronJob:
    jt = cj.spec.jobTemplate
    jt = replace(jt, spec=replace(jt.spec, template=_template(jt.spec.template)))
    return replace(cj, spec=replace(cj.spec, jobTemplate=jt))


def _replication_controller(rc: ReplicationController) -> ReplicationController:
    spec = rc.spec
    if spec.template is None:
        return rc
    labels = spec.template.metadata.labels
    spec = replace(spec, template=_template(spec.template), selector=spec.selector or dict(labels))
    meta = rc.metadata if rc.metadata.labels else replace(rc.metadata, labels=dict(labels))
    return replace(rc, metadata=meta, spec=spec)


def _job(job: Job) -> Job:
    spec = job.spec
    completions, parallelism = spec.completions, spec.parallelism
    if completions is None and parallelism is None:
        completions = 1
    if parallelism is None:
        parallelism = 1
    return replace(
        job,
        spec=replace(spec, completions=completions, parallelism=parallelism, template=_template(spec.template)),
    )


def _service(svc: Service) -> Service:
    ports = [p if p.targetPort is not None else replace(p, targetPort=p.port) for p in svc.spec.ports]
    return replace(svc, spec=replace(svc.spec, ports=ports))


def _secret(s: Secret) -> Secret:
    if not s.stringData:
        return s
    data = dict(s.data)
    for key, value in s.stringData.items():
        data[key] = base64.b64encode(value.encode()).decode()
    return replace(s, data=data, stringData={})


_DEFAULTERS: dict[type, Callable[[Any], Any]] = {
    Pod: _pod,
    Deployment: _deployment,
    ReplicaSet: _replicaset,
    DaemonSet: _daemonset,
    StatefulSet: _statefulset,
    CronJob: _cronjob,
    ReplicationController: _replication_controller,
    Job: _job,
    Service: _service,
    Secret: _secret,
    NetworkPolicy: _network_policy,
    LimitRange: _limit_range,
    RoleBinding: default_binding,
    ClusterRoleBinding: default_binding,
    CustomResourceDefinition: default_crd,
}


def apply_defaults(obj: T) -> T:
    """A copy of ``obj`` with every Kubernetes default filled in (idempotent)."""
    fn = _DEFAULTERS.get(type(obj))
    return fn(obj) if fn is not None else obj
