"""From a user's manifest to a valid, defaulted object, or a ``SchemaError`` naming each bad field.

``decode`` is what admission runs on every write: find the kind, convert strictly with msgspec
(unknown fields, wrong types and missing fields are reported with their path), fill in the
defaults, then run the semantic checks Kubernetes runs (names, ports, selectors, templates...).
``validate`` runs the semantic checks alone on an object already built.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as _dt
import re
from typing import Any

import msgspec
import yaml
from msgspec.structs import replace

from schemas import cron, limits, names, podchecks, securitychecks
from schemas.apiextensions import CustomResourceDefinition, validate_crd, validate_crd_update
from schemas.apps import ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet
from schemas.autoscaling import HorizontalPodAutoscaler
from schemas.batch import CronJob, IndexesError, Job, JobSpec, index_intervals
from schemas.coordination import Lease
from schemas.core import (
    ConfigMap,
    Namespace,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    ReplicationController,
    Secret,
    Service,
)
from schemas.defaults import apply_defaults
from schemas.limitrange import LimitRange
from schemas.limitrange import validate as _limit_range
from schemas.meta import LabelSelector, Object
from schemas.netpolicy import validate as _network_policy
from schemas.networking import Ingress, NetworkPolicy
from schemas.pod import PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume
from schemas.policy import PodDisruptionBudget
from schemas.policy import validate as _pdb
from schemas.quantity import scaled_int_or_percent
from schemas.quota import ResourceQuota
from schemas.quota import validate as _resource_quota
from schemas.rbac import (
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
    validate_binding_update,
    validate_cluster_role,
    validate_cluster_role_binding,
    validate_role,
    validate_role_binding,
)
from schemas.registry import KindInfo, for_manifest
from schemas.scheduling import (
    HIGHEST_USER_DEFINABLE_PRIORITY,
    SYSTEM_PRIORITY_CLASS_PREFIX,
    PriorityClass,
    system_class_problem,
)
from schemas.selector import SelectorError, from_label_selector, from_labels

Errors = list[tuple[str, str]]

NODE_PORT_RANGE = (30000, 32767)  # Kubernetes' default --service-node-port-range


class SchemaError(ValueError):
    """A manifest that cannot become an object; ``details`` holds (field path, message) pairs."""

    def __init__(self, message: str, details: list[tuple[str, str]] | None = None) -> None:
        self.details: list[tuple[str, str]] = list(details or [])
        self.message = message
        if self.details:
            joined = ", ".join(f"{f}: {m}" if f else m for f, m in self.details)
            message = f"{message}: [{joined}]" if len(self.details) > 1 else f"{message}: {joined}"
        super().__init__(message)


# --- decoding --------------------------------------------------------------------------------

_QUANTITY_MAPS = {"limits", "requests", "capacity", "allocatable", "hard"}
_QUANTITY_SCALARS = {"sizeLimit", "averageValue", "divisor"}
_AT_PATH = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$", re.S)
_FIELD_IN_MSG = re.compile(r"^Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]+)`$")


# Kinds with free-form JSON fields (a ControllerRevision's data) keep what they are given, so
# only normalising says what is stored there.
_FREE_FORM = (ControllerRevision,)


def _normalise(value: Any, key: str = "") -> Any:
    """YAML reads timestamps as datetimes and ``cpu: 1`` as a number; Kubernetes reads strings."""
    if value.__class__ is str:
        return value
    if isinstance(value, dict):
        if key == "fieldsV1":  # managedFields' free-form field tree: nothing in it to read as a string
            return value
        if key in _QUANTITY_MAPS:
            return {k: _scalar_to_str(v) for k, v in value.items()}
        return {k: v if v.__class__ is str else _normalise(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [v if v.__class__ is str else _normalise(v, key) for v in value]
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="seconds") + "Z"
    if isinstance(value, _dt.date):
        return value.isoformat()
    if key in _QUANTITY_SCALARS:
        return _scalar_to_str(value)
    return value


def _scalar_to_str(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if not v.is_integer() else str(int(v))
    return v


_PATH_PART = re.compile(r"\.?([^.\[]+)|\[(\d+|\.\.\.)\]")


def _name_map_key(path: str, data: Any) -> str:
    """msgspec reports a bad map value as ``labels[...]``; name the key, as Kubernetes does."""
    cur = data
    out = ""
    for m in _PATH_PART.finditer(path):
        name, index = m.group(1), m.group(2)
        if name is not None:
            out += f".{name}" if out else name
            cur = cur.get(name) if isinstance(cur, dict) else None
        elif index == "...":
            bad = next((k for k, v in cur.items() if not isinstance(v, str)), None) if isinstance(cur, dict) else None
            if bad is None:
                return path
            out += f"[{bad}]"
            cur = cur[bad]
        else:
            out += f"[{index}]"
            cur = cur[int(index)] if isinstance(cur, list) and int(index) < len(cur) else None
    return out


def _field_from_msgspec(err: msgspec.ValidationError, data: Any) -> tuple[str, str]:
    text = str(err)
    path, msg = "", text
    if m := _AT_PATH.match(text):
        msg, path = m["msg"], m["path"]
    path = path.lstrip(".")
    if "[...]" in path:
        path = _name_map_key(path, data)
    if m := _FIELD_IN_MSG.match(msg):
        path = f"{path}.{m['name']}" if path else m["name"]
        msg = "Required value" if m["what"] == "missing required" else f'unknown field "{m["name"]}"'
    return path, msg


def load(raw: dict[str, Any] | bytes | str) -> dict[str, Any]:
    """The manifest as a dict: JSON or YAML text, or a dict already."""
    if isinstance(raw, dict):
        return raw
    try:
        if raw.lstrip()[:1] in ("{", b"{"):
            data = limits.decode_json(raw, what="manifest")
        else:
            data = limits.load_one_yaml(raw, what="manifest")
    except limits.InputError as e:
        raise SchemaError(f"the manifest cannot be decoded: {e.message}") from None
    except yaml.YAMLError as e:
        raise SchemaError(f"the manifest is neither JSON nor YAML: {e}") from None
    if not isinstance(data, dict):
        raise SchemaError("the manifest must be a mapping with apiVersion, kind and metadata",
                          [("", f"expected an object, got {type(data).__name__}")])
    return data


def decode(raw: dict[str, Any] | bytes | str, *, node_port_range: tuple[int, int] = NODE_PORT_RANGE) -> Object:
    """A valid, defaulted object from a manifest.

    Raises ``schemas.registry.UnknownKind`` for an unknown apiVersion/kind and ``SchemaError``
    with every problem found otherwise.
    """
    data = load(raw)
    api_version, kind = data.get("apiVersion"), data.get("kind")
    missing = [(f, "Required value") for f, v in (("apiVersion", api_version), ("kind", kind)) if not v]
    if missing:
        raise SchemaError("Object 'Kind' is missing" if not kind else "Object 'apiVersion' is missing", missing)
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise SchemaError("apiVersion and kind must be strings",
                          [(f, "Expected `str`") for f in ("apiVersion", "kind")])
    info = for_manifest(api_version, kind)
    name = (data.get("metadata") or {}).get("name", "") if isinstance(data.get("metadata"), dict) else ""
    if info.custom is not None:
        return _decode_custom(info, data, name)
    obj = None
    if info.type not in _FREE_FORM:
        # Most manifests hold nothing to normalise: every value that would be (a YAML
        # timestamp, ``cpu: 1``) is refused by a ``str`` field, so a strict conversion that
        # succeeds is the same as one of the normalised manifest, and one that fails goes on.
        with contextlib.suppress(msgspec.ValidationError):
            obj = msgspec.convert(data, info.type)
    if obj is None:
        normalised = _normalise(data)
        try:
            obj = msgspec.convert(normalised, info.type)
        except msgspec.ValidationError as e:
            raise SchemaError(f'{kind} "{name}" is invalid', [_field_from_msgspec(e, normalised)]) from None
    obj = apply_defaults(obj)
    errors = validate(obj, node_port_range=node_port_range)
    if errors:
        raise SchemaError(f'{kind} "{obj.metadata.name or name}" is invalid', errors)
    return obj


def _dates(value: Any) -> Any:
    """YAML timestamps as Kubernetes' strings; nothing else of a custom resource is touched
    (its schema says what a number is)."""
    if isinstance(value, dict):
        return {k: _dates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dates(v) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date)):
        return _normalise(value)
    return value


def _decode_custom(info: KindInfo, data: dict[str, Any], name: str) -> Object:
    """A custom resource: defaulted and checked by its version's schema, then its metadata."""
    from schemas import apiextensions

    kind = info.kind
    data = _dates(data)
    defaulted, problems = apiextensions.admit(info, data)
    if problems:
        raise SchemaError(f'{kind}.{info.group} "{name}" is invalid', problems)
    # Stored at the storage version, as Kubernetes does (conversion None: only apiVersion changes).
    defaulted["apiVersion"] = f"{info.group}/{info.custom.storage}"
    try:
        obj = msgspec.convert(defaulted, info.type)
    except msgspec.ValidationError as e:
        raise SchemaError(f'{kind}.{info.group} "{name}" is invalid', [_field_from_msgspec(e, defaulted)]) from None
    errors: Errors = []
    _metadata(errors, obj)
    if errors:
        raise SchemaError(f'{kind}.{info.group} "{obj.metadata.name or name}" is invalid', errors)
    return obj


# --- semantic validation ---------------------------------------------------------------------


def validate(obj: Object, *, node_port_range: tuple[int, int] = NODE_PORT_RANGE) -> Errors:
    """Every semantic problem of a decoded object, as (field path, message) pairs."""
    errs: Errors = []
    _metadata(errs, obj)
    check = _CHECKS.get(type(obj))
    if check is not None:
        if isinstance(obj, Service):
            _service(errs, obj, node_port_range)
        else:
            check(errs, obj)
    return errs


def validate_update(new: Object, old: Object) -> Errors:
    """What Kubernetes refuses on an update beyond ``validate``: fields that may not change."""
    errs: Errors = []
    check = _UPDATE_CHECKS.get(type(new))
    if check is not None and type(old) is type(new):
        check(errs, new, old)
    return errs


def _job_update(errs: Errors, new: Job, old: Job) -> None:
    if new.spec.successPolicy != old.spec.successPolicy:
        errs.append(("spec.successPolicy", "field is immutable"))


def _pod_update(errs: Errors, new: Pod, old: Pod) -> None:
    # The fields Priority admission set on create (kept when an update leaves them unset).
    for name in ("priorityClassName", "priority", "preemptionPolicy"):
        if getattr(new.spec, name) != getattr(old.spec, name):
            errs.append((f"spec.{name}", "field is immutable"))
    securitychecks.gates_update(errs, new.spec.schedulingGates, old.spec.schedulingGates)


def _priority_class(errs: Errors, pc: PriorityClass) -> None:
    """Kubernetes' ValidatePriorityClass (one globalDefault is the api's check: it needs the others)."""
    if pc.metadata.name.startswith(SYSTEM_PRIORITY_CLASS_PREFIX):
        problem = system_class_problem(pc)
        if problem is not None:
            errs.append(("metadata.name", f"Forbidden: priority class names with '{SYSTEM_PRIORITY_CLASS_PREFIX}' "
                                          f"prefix are reserved for system use only. error: {problem}"))
    elif pc.value > HIGHEST_USER_DEFINABLE_PRIORITY:
        errs.append(("value", "Forbidden: maximum allowed value of a user defined priority is "
                              f"{HIGHEST_USER_DEFINABLE_PRIORITY}"))


def _priority_class_update(errs: Errors, new: PriorityClass, old: PriorityClass) -> None:
    if new.value != old.value:
        errs.append(("value", "Forbidden: may not be changed in an update."))
    if new.preemptionPolicy != old.preemptionPolicy:
        errs.append(("preemptionPolicy", "field is immutable"))


_DNS_LABEL_NAMED = (Namespace,)
_PATH_SEGMENT_NAMED = (Role, ClusterRole, RoleBinding, ClusterRoleBinding)
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def _metadata(errs: Errors, obj: Object) -> None:
    meta = obj.metadata
    if not meta.name:
        if not meta.generateName:
            errs.append(("metadata.name", "name or generateName is required"))
    elif isinstance(obj, Service):
        if len(meta.name) > 63 or not _DNS1035.fullmatch(meta.name):
            errs.append(("metadata.name",
                         "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
                         "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name', or "
                         f"'abc-123'), got \"{meta.name}\""))
    elif isinstance(obj, _DNS_LABEL_NAMED):
        errs.extend(("metadata.name", m) for m in names.dns1123_label(meta.name))
    elif isinstance(obj, _PATH_SEGMENT_NAMED):  # Kubernetes' ValidateRBACName
        errs.extend(("metadata.name", m) for m in names.path_segment_name(meta.name))
    elif bad := names.dns1123_subdomain(meta.name):
        errs.extend(("metadata.name", m) for m in bad)
    if meta.namespace and (bad := names.dns1123_label(meta.namespace)):
        errs.extend(("metadata.namespace", m) for m in bad)
    _labels(errs, "metadata.labels", meta.labels)
    for key in meta.annotations:
        if bad := names.qualified_name(key):
            errs.extend((f"metadata.annotations[{key}]", m) for m in bad)


def _labels(errs: Errors, path: str, labels: dict[str, str]) -> None:
    # Every write checks its labels: no generator or string is made for a valid one.
    for key, value in labels.items():
        if bad := names.qualified_name(key):
            errs.extend((f"{path}[{key}]", f"key {m}") for m in bad)
        if bad := names.label_value(value):
            errs.extend((f"{path}[{key}]", m) for m in bad)


def _non_negative(errs: Errors, path: str, value: int | None) -> None:
    if value is not None and value < 0:
        errs.append((path, "must be greater than or equal to 0"))


def _template(errs: Errors, path: str, template: PodTemplateSpec, policies: tuple[str, ...]) -> None:
    _labels(errs, f"{path}.metadata.labels", template.metadata.labels)
    podchecks.pod_spec(errs, f"{path}.spec", template.spec, policies)
    securitychecks.apparmor_annotations(errs, f"{path}.metadata.annotations", template.metadata.annotations,
                                        template.spec)


def _selector_matches(errs: Errors, selector: LabelSelector | None, template: PodTemplateSpec,
                      required: bool = True) -> None:
    if selector is None:
        if required:
            errs.append(("spec.selector", "Required value"))
        return
    try:
        sel = from_label_selector(selector)
    except SelectorError as e:
        errs.append(("spec.selector", str(e)))
        return
    if sel.empty:
        errs.append(("spec.selector", "empty selector is invalid: it would select every pod"))
    elif not sel.matches(template.metadata.labels):
        errs.append(("spec.template.metadata.labels", "Invalid value: selector does not match template labels"))


def _pod(errs: Errors, pod: Pod) -> None:
    podchecks.pod_spec(errs, "spec", pod.spec)
    securitychecks.gated_pod(errs, pod.spec)
    securitychecks.apparmor_annotations(errs, "metadata.annotations", pod.metadata.annotations, pod.spec)


def _deployment(errs: Errors, d: Deployment) -> None:
    _non_negative(errs, "spec.replicas", d.spec.replicas)
    _non_negative(errs, "spec.minReadySeconds", d.spec.minReadySeconds)
    _non_negative(errs, "spec.revisionHistoryLimit", d.spec.revisionHistoryLimit)
    _selector_matches(errs, d.spec.selector, d.spec.template)
    _template(errs, "spec.template", d.spec.template, ("Always",))
    strategy = d.spec.strategy
    if strategy.type == "Recreate" and strategy.rollingUpdate is not None:
        errs.append(("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"))
    ru = strategy.rollingUpdate
    if strategy.type == "RollingUpdate" and ru is not None:
        values = {}
        for name in ("maxSurge", "maxUnavailable"):
            raw = getattr(ru, name)
            try:
                values[name] = scaled_int_or_percent(raw, 100, round_up=True)
            except ValueError as e:
                errs.append((f"spec.strategy.rollingUpdate.{name}", str(e)))
                continue
            if values[name] < 0:
                errs.append((f"spec.strategy.rollingUpdate.{name}", "must be greater than or equal to 0"))
            if isinstance(raw, str) and raw.endswith("%") and values[name] > 100 and name == "maxUnavailable":
                errs.append((f"spec.strategy.rollingUpdate.{name}", "must not be greater than 100%"))
        if values.get("maxSurge") == 0 and values.get("maxUnavailable") == 0:
            errs.append(("spec.strategy.rollingUpdate.maxUnavailable",
                         "may not be 0 when `maxSurge` is 0"))
    if d.spec.progressDeadlineSeconds <= d.spec.minReadySeconds:
        errs.append(("spec.progressDeadlineSeconds", "must be greater than minReadySeconds"))


def _replicaset(errs: Errors, rs: ReplicaSet) -> None:
    _non_negative(errs, "spec.replicas", rs.spec.replicas)
    _non_negative(errs, "spec.minReadySeconds", rs.spec.minReadySeconds)
    _selector_matches(errs, rs.spec.selector, rs.spec.template)
    _template(errs, "spec.template", rs.spec.template, ("Always",))


def _daemonset(errs: Errors, ds: DaemonSet) -> None:
    _non_negative(errs, "spec.minReadySeconds", ds.spec.minReadySeconds)
    _selector_matches(errs, ds.spec.selector, ds.spec.template)
    _template(errs, "spec.template", ds.spec.template, ("Always",))
    ru = ds.spec.updateStrategy.rollingUpdate
    if ru is not None:
        for name in ("maxSurge", "maxUnavailable"):
            try:
                scaled_int_or_percent(getattr(ru, name), 100, round_up=True)
            except ValueError as e:
                errs.append((f"spec.updateStrategy.rollingUpdate.{name}", str(e)))


def _statefulset(errs: Errors, sts: StatefulSet) -> None:
    spec = sts.spec
    for name in ("replicas", "minReadySeconds", "revisionHistoryLimit"):
        _non_negative(errs, f"spec.{name}", getattr(spec, name))
    if spec.ordinals is not None:
        _non_negative(errs, "spec.ordinals.start", spec.ordinals.start)
    if spec.serviceName:
        errs.extend(("spec.serviceName", m) for m in names.dns1123_label(spec.serviceName))
    _selector_matches(errs, spec.selector, spec.template)
    # The containers mount the claims by their template names (Kubernetes leaves the pod spec
    # unchecked here; the union of volumes and claims is what the pods will have).
    tmpl = spec.template
    claim_volumes = [Volume(name=t.metadata.name,
                            persistentVolumeClaim=PersistentVolumeClaimVolumeSource(claimName=t.metadata.name))
                     for t in spec.volumeClaimTemplates
                     if t.metadata.name and all(v.name != t.metadata.name for v in tmpl.spec.volumes)]
    if claim_volumes:
        tmpl = replace(tmpl, spec=replace(tmpl.spec, volumes=[*tmpl.spec.volumes, *claim_volumes]))
    _template(errs, "spec.template", tmpl, ("Always",))
    claims = set()
    for i, t in enumerate(spec.volumeClaimTemplates):
        path = f"spec.volumeClaimTemplates[{i}]"
        if not t.metadata.name:
            errs.append((f"{path}.metadata.name", "Required value"))
        else:
            errs.extend((f"{path}.metadata.name", m) for m in names.dns1123_subdomain(t.metadata.name))
            if t.metadata.name in claims:
                errs.append((f"{path}.metadata.name", f'Duplicate value: "{t.metadata.name}"'))
            claims.add(t.metadata.name)
        claim = PersistentVolumeClaim(metadata=t.metadata, spec=t.spec)
        sub: Errors = []
        _pvc(sub, claim)
        errs.extend((f"{path}.{f}", m) for f, m in sub)
    strategy = spec.updateStrategy
    ru = strategy.rollingUpdate
    if strategy.type == "OnDelete" and ru is not None:
        errs.append(("spec.updateStrategy.rollingUpdate", "may not be specified when strategy `type` is 'OnDelete'"))
    if ru is not None:
        _non_negative(errs, "spec.updateStrategy.rollingUpdate.partition", ru.partition)
        if ru.maxUnavailable is not None:
            try:
                if scaled_int_or_percent(ru.maxUnavailable, 100, round_up=True) < 1:
                    errs.append(("spec.updateStrategy.rollingUpdate.maxUnavailable", "must be greater than 0"))
            except ValueError as e:
                errs.append(("spec.updateStrategy.rollingUpdate.maxUnavailable", str(e)))


_CRONJOB_NAME_MAX = 52  # the Job names add 11 characters, and a Job's pods more


def _cronjob(errs: Errors, cj: CronJob) -> None:
    spec = cj.spec
    if len(cj.metadata.name) > _CRONJOB_NAME_MAX:
        errs.append(("metadata.name", f"must be no more than {_CRONJOB_NAME_MAX} characters"))
    for name in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        _non_negative(errs, f"spec.{name}", getattr(spec, name))
    if spec.timeZone is not None:
        try:
            cron.zone(spec.timeZone)
        except cron.CronError:
            errs.append(("spec.timeZone", f'Invalid value: "{spec.timeZone}": unknown time zone {spec.timeZone}'))
        if cron.has_zone_prefix(spec.schedule):
            errs.append(("spec.schedule", f'Invalid value: "{spec.schedule}": cannot use TZ or CRON_TZ in '
                                          "schedule, use timeZone field instead"))
    if not spec.schedule:
        errs.append(("spec.schedule", "Required value"))
    else:
        try:
            cron.parse(spec.schedule, "UTC" if spec.timeZone is not None else None)
        except cron.CronError as e:
            errs.append(("spec.schedule", f'Invalid value: "{spec.schedule}": {e}'))
    template = spec.jobTemplate
    _labels(errs, "spec.jobTemplate.metadata.labels", template.metadata.labels)
    sub: Errors = []
    _job(sub, Job(metadata=cj.metadata, spec=template.spec))
    errs.extend((f"spec.jobTemplate.{f}", m) for f, m in sub)


def _replication_controller(errs: Errors, rc: ReplicationController) -> None:
    _non_negative(errs, "spec.replicas", rc.spec.replicas)
    if rc.spec.template is None:
        errs.append(("spec.template", "Required value"))
        return
    if not rc.spec.selector:
        errs.append(("spec.selector", "Required value"))
    else:
        try:
            if not from_labels(rc.spec.selector).matches(rc.spec.template.metadata.labels):
                errs.append(("spec.template.metadata.labels",
                             "Invalid value: selector does not match template labels"))
        except SelectorError as e:
            errs.append(("spec.selector", str(e)))
    _template(errs, "spec.template", rc.spec.template, ("Always",))


def _job(errs: Errors, job: Job) -> None:
    spec = job.spec
    for name in ("parallelism", "completions", "backoffLimit", "backoffLimitPerIndex", "maxFailedIndexes",
                 "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        _non_negative(errs, f"spec.{name}", getattr(spec, name))
    indexed = spec.completionMode == "Indexed"
    if indexed and spec.completions is None:
        errs.append(("spec.completions", "Required value: when completion mode is Indexed"))
    if spec.backoffLimitPerIndex is not None and not indexed:
        errs.append(("spec.backoffLimitPerIndex",
                     f"Invalid value: {spec.backoffLimitPerIndex}: requires indexed completion mode"))
    if spec.maxFailedIndexes is not None:
        if spec.backoffLimitPerIndex is None:
            errs.append(("spec.backoffLimitPerIndex", "Required value: when maxFailedIndexes is specified"))
        if indexed and spec.completions is not None and spec.maxFailedIndexes > spec.completions:
            errs.append(("spec.maxFailedIndexes",
                         f"Invalid value: {spec.maxFailedIndexes}: must be less than or equal to completions"))
        if spec.maxFailedIndexes > _MAX_INDEXES:
            errs.append(("spec.maxFailedIndexes",
                         f"Invalid value: {spec.maxFailedIndexes}: must be less than or equal to {_MAX_INDEXES}"))
    if (indexed and spec.backoffLimitPerIndex is not None and spec.completions is not None
            and spec.completions > _MAX_INDEXES):
        errs.append(("spec.completions", f"Invalid value: {spec.completions}: must be less than or equal to "
                                         f"{_MAX_INDEXES} when backoffLimitPerIndex is specified"))
    if spec.podFailurePolicy is not None:
        _pod_failure_policy(errs, job)
    if spec.successPolicy is not None:
        _success_policy(errs, spec)
    if spec.selector is not None:
        _selector_matches(errs, spec.selector, spec.template)
    _template(errs, "spec.template", spec.template, ("OnFailure", "Never"))


_MAX_INDEXES = 100_000  # completions (with backoffLimitPerIndex) and maxFailedIndexes
_MAX_RULES = 20
_MAX_CONDITION_PATTERNS = 20
_MAX_EXIT_CODES = 255


def _pod_failure_policy(errs: Errors, job: Job) -> None:
    """The checks Kubernetes runs on ``spec.podFailurePolicy``."""
    spec = job.spec
    policy = spec.podFailurePolicy
    assert policy is not None
    path = "spec.podFailurePolicy.rules"
    if spec.template.spec.restartPolicy != "Never":
        errs.append(("spec.template.spec.restartPolicy", f'Invalid value: "{spec.template.spec.restartPolicy}": '
                                                         'only "Never" is supported when podFailurePolicy is specified'))
    if len(policy.rules) > _MAX_RULES:
        errs.append((path, f"Too many: {len(policy.rules)}: must have at most {_MAX_RULES} items"))
    containers = {c.name for c in [*spec.template.spec.containers, *spec.template.spec.initContainers]}
    for i, rule in enumerate(policy.rules):
        rp = f"{path}[{i}]"
        if rule.action == "FailIndex" and spec.backoffLimitPerIndex is None:
            errs.append((f"{rp}.action", 'Invalid value: "FailIndex": requires the backoffLimitPerIndex to be set'))
        on_exit = rule.onExitCodes
        if on_exit is not None:
            ep = f"{rp}.onExitCodes"
            if on_exit.containerName is not None and on_exit.containerName not in containers:
                errs.append((f"{ep}.containerName", f'Invalid value: "{on_exit.containerName}": must be one of the '
                                                    "container or initContainer names in the pod template"))
            values = on_exit.values
            if not values:
                errs.append((f"{ep}.values", "Invalid value: []: at least one value is required"))
            elif len(values) > _MAX_EXIT_CODES:
                errs.append((f"{ep}.values", f"Too many: {len(values)}: must have at most {_MAX_EXIT_CODES} items"))
            else:
                for j, v in enumerate(values):
                    if on_exit.operator == "In" and v == 0:
                        errs.append((f"{ep}.values[{j}]", "Invalid value: 0: must not be 0 for the In operator"))
                    if v in values[:j]:
                        errs.append((f"{ep}.values[{j}]", f"Duplicate value: {v}"))
                if any(a > b for a, b in zip(values, values[1:], strict=False)):
                    errs.append((f"{ep}.values", f"Invalid value: {values}: must be ordered"))
        patterns = rule.onPodConditions
        cp = f"{rp}.onPodConditions"
        if len(patterns) > _MAX_CONDITION_PATTERNS:
            errs.append((cp, f"Too many: {len(patterns)}: must have at most {_MAX_CONDITION_PATTERNS} items"))
        for j, pattern in enumerate(patterns):
            errs.extend((f"{cp}[{j}].type", m) for m in names.qualified_name(pattern.type))
        if on_exit is not None and patterns:
            errs.append((rp, "Invalid value: specifying both OnExitCodes and OnPodConditions is not supported"))
        if on_exit is None and not patterns:
            errs.append((rp, "Invalid value: specifying one of OnExitCodes and OnPodConditions is required"))


_MAX_SUCCEEDED_INDEXES_CHARS = 64 * 1024


def _success_policy(errs: Errors, spec: JobSpec) -> None:
    """The checks Kubernetes runs on ``spec.successPolicy``."""
    policy = spec.successPolicy
    assert policy is not None
    path = "spec.successPolicy"
    if spec.completionMode != "Indexed":
        errs.append((path, "Invalid value: requires indexed completion mode"))
        return
    if not policy.rules:
        errs.append((f"{path}.rules", "Required value: at least one rules must be specified when the successPolicy "
                                      "is specified"))
    if len(policy.rules) > _MAX_RULES:
        errs.append((f"{path}.rules", f"Too many: {len(policy.rules)}: must have at most {_MAX_RULES} items"))
    completions = spec.completions
    if completions is None:
        return  # refused above: Indexed requires completions
    for i, rule in enumerate(policy.rules):
        rp = f"{path}.rules[{i}]"
        if rule.succeededIndexes is None and rule.succeededCount is None:
            errs.append((rp, "Required value: at least one of succeededCount or succeededIndexes must be specified"))
        total = 0
        if rule.succeededIndexes is not None:
            ip, text = f"{rp}.succeededIndexes", rule.succeededIndexes
            if len(text) > _MAX_SUCCEEDED_INDEXES_CHARS:
                errs.append((ip, f"Too long: may not be more than {_MAX_SUCCEEDED_INDEXES_CHARS} bytes"))
            try:
                total = sum(b - a + 1 for a, b in index_intervals(text, completions))
            except IndexesError as e:
                errs.append((ip, f'Invalid value: "{text}": error parsing succeededIndexes: {e}'))
        count = rule.succeededCount
        if count is not None:
            cp = f"{rp}.succeededCount"
            _non_negative(errs, cp, count)
            if count > completions:
                errs.append((cp, f"Invalid value: {count}: must be less than or equal to {completions} "
                                 "(the number of specified completions)"))
            if rule.succeededIndexes is not None and count > total:
                errs.append((cp, f"Invalid value: {count}: must be less than or equal to {total} "
                                 "(the number of indexes in the specified succeededIndexes field)"))


def _service(errs: Errors, svc: Service, node_port_range: tuple[int, int]) -> None:
    spec = svc.spec
    headless = spec.clusterIP == "None"
    if spec.type == "ExternalName":
        if not spec.externalName:
            errs.append(("spec.externalName", "Required value"))
        else:
            errs.extend(("spec.externalName", m) for m in names.dns1123_subdomain(spec.externalName.rstrip(".")))
    elif not spec.ports and not headless:
        errs.append(("spec.ports", "Required value"))
    seen_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    lo, hi = node_port_range
    for i, p in enumerate(spec.ports):
        pp = f"spec.ports[{i}]"
        errs.extend((f"{pp}.port", m) for m in podchecks.port_number(p.port))
        if len(spec.ports) > 1 and not p.name:
            errs.append((f"{pp}.name", "Required value"))
        if p.name:
            errs.extend((f"{pp}.name", m) for m in names.dns1123_label(p.name))
            if p.name in seen_names:
                errs.append((f"{pp}.name", f'Duplicate value: "{p.name}"'))
            seen_names.add(p.name)
        if (p.port, p.protocol) in seen_ports:
            errs.append((pp, f'Duplicate value: {{"port": {p.port}, "protocol": "{p.protocol}"}}'))
        seen_ports.add((p.port, p.protocol))
        if p.targetPort is not None:
            errs.extend((f"{pp}.targetPort", m) for m in podchecks.int_or_port(p.targetPort))
        if p.nodePort is not None:
            if spec.type not in ("NodePort", "LoadBalancer"):
                errs.append((f"{pp}.nodePort", f"Forbidden: may not be used when `type` is '{spec.type}'"))
            elif not lo <= p.nodePort <= hi:
                errs.append((f"{pp}.nodePort", f"Invalid value: {p.nodePort}: provided port is not in the valid "
                             f"range. The range of valid ports is {lo}-{hi}"))
    try:
        from_labels(spec.selector)
    except SelectorError as e:
        errs.append(("spec.selector", str(e)))


_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def _config_keys(errs: Errors, path: str, keys: list[str]) -> None:
    for key in keys:
        if len(key) > 253 or not _CONFIG_KEY.fullmatch(key):
            errs.append((f"{path}[{key}]", "a valid config key must consist of alphanumeric characters, '-', '_' "
                         "or '.'"))


def _configmap(errs: Errors, cm: ConfigMap) -> None:
    _config_keys(errs, "data", list(cm.data) + list(cm.binaryData))
    for key in set(cm.data) & set(cm.binaryData):
        errs.append((f"data[{key}]", "duplicate of key present in binaryData"))
    for key, value in cm.binaryData.items():
        if not _is_base64(value):
            errs.append((f"binaryData[{key}]", "illegal base64 data"))


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _secret(errs: Errors, s: Secret) -> None:
    _config_keys(errs, "data", list(s.data))
    for key, value in s.data.items():
        if not _is_base64(value):
            errs.append((f"data[{key}]", "illegal base64 data"))


def _namespace(errs: Errors, ns: Namespace) -> None:
    if ns.metadata.namespace:
        errs.append(("metadata.namespace", "not allowed on this type"))


def _node(errs: Errors, node: Node) -> None:
    for i, t in enumerate(node.spec.taints):
        errs.extend((f"spec.taints[{i}].key", m) for m in names.qualified_name(t.key))
    for field in ("capacity", "allocatable"):
        podchecks.quantities(errs, f"status.{field}", getattr(node.status, field))


def _hpa(errs: Errors, hpa: HorizontalPodAutoscaler) -> None:
    spec = hpa.spec
    if spec.minReplicas < 1:
        errs.append(("spec.minReplicas", "must be greater than or equal to 1"))
    if spec.maxReplicas < spec.minReplicas:
        errs.append(("spec.maxReplicas", "must be greater than or equal to `minReplicas`"))
    if not spec.scaleTargetRef.kind:
        errs.append(("spec.scaleTargetRef.kind", "Required value"))
    if not spec.scaleTargetRef.name:
        errs.append(("spec.scaleTargetRef.name", "Required value"))
    if hpa.apiVersion == "autoscaling/v1":
        for name in ("metrics", "behavior"):
            if getattr(spec, name):
                errs.append((f"spec.{name}", f'unknown field "{name}" in autoscaling/v1'))
    elif spec.targetCPUUtilizationPercentage is not None:
        errs.append(("spec.targetCPUUtilizationPercentage",
                     f'unknown field "targetCPUUtilizationPercentage" in {hpa.apiVersion}'))
    for i, metric in enumerate(spec.metrics):
        mp = f"spec.metrics[{i}]"
        if metric.type == "Resource":
            if metric.resource is None:
                errs.append((f"{mp}.resource", "Required value: must populate information for the given metric "
                             "source"))
                continue
            target = metric.resource.target
            if target.type == "Utilization" and target.averageUtilization is None:
                errs.append((f"{mp}.resource.target.averageUtilization", "Required value"))
            if target.type == "AverageValue":
                if target.averageValue is None:
                    errs.append((f"{mp}.resource.target.averageValue", "Required value"))
                else:
                    podchecks.quantities(errs, f"{mp}.resource.target", {"averageValue": target.averageValue})
            if target.type == "Value":
                errs.append((f"{mp}.resource.target.type", 'Unsupported value: "Value" for a Resource metric'))
        else:
            errs.append((f"{mp}.type", f'Unsupported value: "{metric.type}": supported values: "Resource"'))


def _ingress(errs: Errors, ing: Ingress) -> None:
    for i, rule in enumerate(ing.spec.rules):
        if rule.host:
            errs.extend((f"spec.rules[{i}].host", m) for m in names.dns1123_subdomain(rule.host.removeprefix("*.")))
        if rule.http is None:
            continue
        for j, path in enumerate(rule.http.paths):
            pp = f"spec.rules[{i}].http.paths[{j}]"
            if path.pathType in ("Exact", "Prefix") and not path.path.startswith("/"):
                errs.append((f"{pp}.path", "must be an absolute path"))
            _ingress_backend(errs, f"{pp}.backend", path.backend)
    if ing.spec.defaultBackend is not None:
        _ingress_backend(errs, "spec.defaultBackend", ing.spec.defaultBackend)


def _ingress_backend(errs: Errors, path: str, backend: Any) -> None:
    if (backend.service is None) == (backend.resource is None):
        errs.append((path, "exactly one of `service` or `resource` must be specified"))
    if backend.service is not None:
        port = backend.service.port
        if bool(port.name) == (port.number is not None):
            errs.append((f"{path}.service.port", "exactly one of `name` or `number` must be specified"))
        if port.number is not None:
            errs.extend((f"{path}.service.port.number", m) for m in podchecks.port_number(port.number))


def _pv(errs: Errors, pv: PersistentVolume) -> None:
    if "storage" not in pv.spec.capacity:
        errs.append(("spec.capacity", "Required value"))
    podchecks.quantities(errs, "spec.capacity", pv.spec.capacity)
    if not pv.spec.accessModes:
        errs.append(("spec.accessModes", "Required value"))
    sources = [s for s in ("hostPath", "local", "nfs") if getattr(pv.spec, s) is not None]
    if not sources:
        errs.append(("spec", "must specify a volume type"))
    elif len(sources) > 1:
        errs.append((f"spec.{sources[1]}", "may not specify more than 1 volume type"))


def _pvc(errs: Errors, pvc: PersistentVolumeClaim) -> None:
    if not pvc.spec.accessModes:
        errs.append(("spec.accessModes", "Required value"))
    requests = pvc.spec.resources.requests
    if "storage" not in requests:
        errs.append(("spec.resources.requests[storage]", "Required value"))
    podchecks.quantities(errs, "spec.resources.requests", requests)
    if pvc.spec.selector is not None:
        try:
            from_label_selector(pvc.spec.selector)
        except SelectorError as e:
            errs.append(("spec.selector", str(e)))


def _lease(errs: Errors, lease: Lease) -> None:
    d = lease.spec.leaseDurationSeconds
    if d is not None and d <= 0:
        errs.append(("spec.leaseDurationSeconds", "must be greater than 0"))
    _non_negative(errs, "spec.leaseTransitions", lease.spec.leaseTransitions)


_CHECKS: dict[type, Any] = {
    Pod: _pod,
    Deployment: _deployment,
    ReplicaSet: _replicaset,
    DaemonSet: _daemonset,
    StatefulSet: _statefulset,
    CronJob: _cronjob,
    ReplicationController: _replication_controller,
    Job: _job,
    Service: _service,
    ConfigMap: _configmap,
    Secret: _secret,
    Namespace: _namespace,
    Node: _node,
    HorizontalPodAutoscaler: _hpa,
    Ingress: _ingress,
    PersistentVolume: _pv,
    PersistentVolumeClaim: _pvc,
    Lease: _lease,
    NetworkPolicy: _network_policy,
    PodDisruptionBudget: _pdb,
    PriorityClass: _priority_class,
    LimitRange: _limit_range,
    ResourceQuota: _resource_quota,
    Role: validate_role,
    CustomResourceDefinition: lambda errs, crd: errs.extend(validate_crd(crd)),
    ClusterRole: validate_cluster_role,
    RoleBinding: validate_role_binding,
    ClusterRoleBinding: validate_cluster_role_binding,
}

_UPDATE_CHECKS: dict[type, Any] = {
    CustomResourceDefinition: validate_crd_update,
    Job: _job_update,
    Pod: _pod_update,
    PriorityClass: _priority_class_update,
    RoleBinding: validate_binding_update,
    ClusterRoleBinding: validate_binding_update,
}

__all__ = ["NODE_PORT_RANGE", "SchemaError", "decode", "load", "validate", "validate_update"]
