"""Request bodies in Kubernetes' protobuf encoding (``application/vnd.kubernetes.protobuf``),
as kubectl's generators (``kubectl create configmap|secret|namespace|serviceaccount|deployment|service|
job|cronjob|ingress|poddisruptionbudget|quota|priorityclass|role|clusterrole|rolebinding|clusterrolebinding``),
``kubectl auth can-i``, ``kubectl auth whoami``, ``kubectl create token`` and ``kubectl drain`` send
them, decoded to their JSON form. Pure.

The envelope is the magic ``k8s\\x00`` then a ``runtime.Unknown`` (typeMeta, raw); ``raw`` is
the object's message. Only the kinds in :data:`KINDS` are known (their field numbers are
those of k8s.io/api's generated.proto), and of each only the fields its table names; any other
kind, or a body that sets a field the table does not name, is refused whole (never read in
part), and the client is told to send JSON. Go writes every non-pointer field, set or not, so
an unknown field holding only zeros and empty strings is passed over.
"""

from __future__ import annotations

import base64
import datetime as _dt
from typing import Any, NamedTuple

MAGIC = b"k8s\x00"


class Message(NamedTuple):
    """One message type: its name (for errors) and its fields, number -> (JSON name, kind). A
    kind is "string", "int" (0 left out, as Go's JSON omits it), "int?" (a pointer: 0 kept), "bool", "time", "map" (string to string), "map-bytes",
    "map-quantity" (string to resource.Quantity), "intstr" (IntOrString), "quantity", a
    Message, a one-item list (repeated), or ("inline", Message): a struct Go embeds, whose
    fields JSON puts beside the parent's (IngressRule's IngressRuleValue, Volume's VolumeSource)."""

    name: str
    fields: dict[int, tuple[str, Any]]



def _m(name: str, **numbered: Any) -> Message:
    """``_m("Time", f1=("seconds", "int"))``: field numbers as keywords, for readable tables."""
    return Message(name, {int(k[1:]): v for k, v in numbered.items()})


TIME = _m("Time", f1=("seconds", "int"), f2=("nanos", "int"))
OWNER_REFERENCE = _m("OwnerReference", f1=("kind", "string"), f3=("name", "string"), f4=("uid", "string"),
                     f5=("apiVersion", "string"), f6=("controller", "bool"), f7=("blockOwnerDeletion", "bool"))
OBJECT_META = _m(
    "ObjectMeta", f1=("name", "string"), f2=("generateName", "string"), f3=("namespace", "string"),
    f5=("uid", "string"), f6=("resourceVersion", "string"), f7=("generation", "int"), f8=("creationTimestamp", "time"),
    f11=("labels", "map"), f12=("annotations", "map"), f13=("ownerReferences", [OWNER_REFERENCE]),
    f14=("finalizers", ["string"]),
)
DELETE_OPTIONS = _m("DeleteOptions", f1=("gracePeriodSeconds", "int?"),
                    f2=("preconditions", _m("Preconditions", f1=("uid", "string"), f2=("resourceVersion", "string"))),
                    f3=("orphanDependents", "bool"), f4=("propagationPolicy", "string"), f5=("dryRun", ["string"]))
OBJECT_REFERENCE = _m("ObjectReference", f1=("kind", "string"), f2=("namespace", "string"), f3=("name", "string"),
                      f4=("uid", "string"), f5=("apiVersion", "string"), f6=("resourceVersion", "string"),
                      f7=("fieldPath", "string"))
LABEL_SELECTOR = _m("LabelSelector", f1=("matchLabels", "map"), f2=("matchExpressions", [_m(
    "LabelSelectorRequirement", f1=("key", "string"), f2=("operator", "string"), f3=("values", ["string"]))]))

# The pod template: the fields kubectl's generators write (create deployment|job|cronjob, create
# job --from=cronjob, which copies a stored template with its defaults). A body that sets any
# other field is refused, never read in part.
CONTAINER = _m(
    "Container", f1=("name", "string"), f2=("image", "string"), f3=("command", ["string"]), f4=("args", ["string"]),
    f5=("workingDir", "string"),
    f6=("ports", [_m("ContainerPort", f1=("name", "string"), f2=("hostPort", "int"), f3=("containerPort", "int"),
                     f4=("protocol", "string"), f5=("hostIP", "string"))]),
    f7=("env", [_m("EnvVar", f1=("name", "string"), f2=("value", "string"))]),
    f8=("resources", _m("ResourceRequirements", f1=("limits", "map-quantity"), f2=("requests", "map-quantity"))),
    f9=("volumeMounts", [_m("VolumeMount", f1=("name", "string"), f2=("readOnly", "bool"),
                            f3=("mountPath", "string"))]),
    f13=("terminationMessagePath", "string"), f14=("imagePullPolicy", "string"), f16=("stdin", "bool"),
    f17=("stdinOnce", "bool"), f18=("tty", "bool"), f20=("terminationMessagePolicy", "string"),
    f24=("restartPolicy", "string"),  # "Always": a sidecar (init containers only)
)
VOLUME = _m("Volume", f1=("name", "string"), f2=("", ("inline", _m(
    "VolumeSource", f2=("emptyDir", _m("EmptyDirVolumeSource", f1=("medium", "string"), f2=("sizeLimit", "quantity")))))))
POD_SPEC = _m(
    "PodSpec", f1=("volumes", [VOLUME]), f2=("containers", [CONTAINER]), f3=("restartPolicy", "string"),
    f4=("terminationGracePeriodSeconds", "int?"), f6=("dnsPolicy", "string"), f7=("nodeSelector", "map"),
    f8=("serviceAccountName", "string"), f16=("hostname", "string"), f17=("subdomain", "string"),
    f19=("schedulerName", "string"), f20=("initContainers", [CONTAINER]),
)
POD_TEMPLATE = _m("PodTemplateSpec", f1=("metadata", OBJECT_META), f2=("spec", POD_SPEC))
JOB_SPEC = _m("JobSpec", f3=("activeDeadlineSeconds", "int?"), f6=("template", POD_TEMPLATE),
              f7=("backoffLimit", "int?"), f8=("ttlSecondsAfterFinished", "int?"), f9=("completionMode", "string"))
SERVICE_BACKEND = _m("IngressBackend", f4=("service", _m(
    "IngressServiceBackend", f1=("name", "string"),
    f2=("port", _m("ServiceBackendPort", f1=("name", "string"), f2=("number", "int"))))))

POLICY_RULE = _m("PolicyRule", f1=("verbs", ["string"]), f2=("apiGroups", ["string"]), f3=("resources", ["string"]),
                 f4=("resourceNames", ["string"]), f5=("nonResourceURLs", ["string"]))
SUBJECT = _m("Subject", f1=("kind", "string"), f2=("apiGroup", "string"), f3=("name", "string"),
             f4=("namespace", "string"))
ROLE_REF = _m("RoleRef", f1=("apiGroup", "string"), f2=("kind", "string"), f3=("name", "string"))

KINDS: dict[str, Message] = {
    "ConfigMap": _m("ConfigMap", f1=("metadata", OBJECT_META), f2=("data", "map"), f3=("binaryData", "map-bytes"),
                    f4=("immutable", "bool")),
    "Secret": _m("Secret", f1=("metadata", OBJECT_META), f2=("data", "map-bytes"), f3=("type", "string"),
                 f4=("stringData", "map"), f5=("immutable", "bool")),
    "Namespace": _m("Namespace", f1=("metadata", OBJECT_META),
                    f2=("spec", _m("NamespaceSpec", f1=("finalizers", ["string"])))),
    "ServiceAccount": _m("ServiceAccount", f1=("metadata", OBJECT_META), f2=("secrets", [OBJECT_REFERENCE]),
                         f3=("imagePullSecrets", [_m("LocalObjectReference", f1=("name", "string"))]),
                         f4=("automountServiceAccountToken", "bool")),
    # kubectl create deployment|service|job|cronjob|ingress|poddisruptionbudget
    "Deployment": _m("Deployment", f1=("metadata", OBJECT_META), f2=("spec", _m(
        "DeploymentSpec", f1=("replicas", "int?"), f2=("selector", LABEL_SELECTOR), f3=("template", POD_TEMPLATE),
        f4=("strategy", _m("DeploymentStrategy", f1=("type", "string"))), f5=("minReadySeconds", "int")))),
    "Service": _m("Service", f1=("metadata", OBJECT_META), f2=("spec", _m(
        "ServiceSpec",
        f1=("ports", [_m("ServicePort", f1=("name", "string"), f2=("protocol", "string"), f3=("port", "int"),
                         f4=("targetPort", "intstr"), f5=("nodePort", "int"))]),
        f2=("selector", "map"), f3=("clusterIP", "string"), f4=("type", "string"), f10=("externalName", "string")))),
    "Job": _m("Job", f1=("metadata", OBJECT_META), f2=("spec", JOB_SPEC)),
    "CronJob": _m("CronJob", f1=("metadata", OBJECT_META), f2=("spec", _m(
        "CronJobSpec", f1=("schedule", "string"),
        f5=("jobTemplate", _m("JobTemplateSpec", f1=("metadata", OBJECT_META), f2=("spec", JOB_SPEC)))))),
    "Ingress": _m("Ingress", f1=("metadata", OBJECT_META), f2=("spec", _m(
        "IngressSpec", f1=("defaultBackend", SERVICE_BACKEND),
        f2=("tls", [_m("IngressTLS", f1=("hosts", ["string"]), f2=("secretName", "string"))]),
        f3=("rules", [_m("IngressRule", f1=("host", "string"), f2=("", ("inline", _m(
            "IngressRuleValue", f1=("http", _m("HTTPIngressRuleValue", f1=("paths", [_m(
                "HTTPIngressPath", f1=("path", "string"), f2=("backend", SERVICE_BACKEND),
                f3=("pathType", "string"))])))))))]),
        f4=("ingressClassName", "string")))),
    "PodDisruptionBudget": _m("PodDisruptionBudget", f1=("metadata", OBJECT_META), f2=("spec", _m(
        "PodDisruptionBudgetSpec", f1=("minAvailable", "intstr"), f2=("selector", LABEL_SELECTOR),
        f3=("maxUnavailable", "intstr")))),
    # kubectl create quota (scopes are refused by the api: not served)
    "ResourceQuota": _m("ResourceQuota", f1=("metadata", OBJECT_META), f2=("spec", _m(
        "ResourceQuotaSpec", f1=("hard", "map-quantity"), f2=("scopes", ["string"])))),
    # kubectl create priorityclass|role|clusterrole|rolebinding|clusterrolebinding
    "PriorityClass": _m("PriorityClass", f1=("metadata", OBJECT_META), f2=("value", "int?"),
                        f3=("globalDefault", "bool"), f4=("description", "string"),
                        f5=("preemptionPolicy", "string")),
    "Role": _m("Role", f1=("metadata", OBJECT_META), f2=("rules", [POLICY_RULE])),
    "ClusterRole": _m("ClusterRole", f1=("metadata", OBJECT_META), f2=("rules", [POLICY_RULE]),
                      f3=("aggregationRule", _m("AggregationRule", f1=("clusterRoleSelectors", [LABEL_SELECTOR])))),
    "RoleBinding": _m("RoleBinding", f1=("metadata", OBJECT_META), f2=("subjects", [SUBJECT]), f3=("roleRef", ROLE_REF)),
    "ClusterRoleBinding": _m("ClusterRoleBinding", f1=("metadata", OBJECT_META), f2=("subjects", [SUBJECT]),
                             f3=("roleRef", ROLE_REF)),
    # kubectl drain, and schedulers written with client-go
    "Eviction": _m("Eviction", f1=("metadata", OBJECT_META), f2=("deleteOptions", DELETE_OPTIONS)),
    "Binding": _m("Binding", f1=("metadata", OBJECT_META), f2=("target", OBJECT_REFERENCE)),
    # kubectl auth can-i
    "SelfSubjectAccessReview": _m("SelfSubjectAccessReview", f1=("metadata", OBJECT_META), f2=("spec", _m(
        "SelfSubjectAccessReviewSpec",
        f1=("resourceAttributes", _m("ResourceAttributes", f1=("namespace", "string"), f2=("verb", "string"),
                                     f3=("group", "string"), f4=("version", "string"), f5=("resource", "string"),
                                     f6=("subresource", "string"), f7=("name", "string"))),
        f2=("nonResourceAttributes", _m("NonResourceAttributes", f1=("path", "string"), f2=("verb", "string")))))),
    "SelfSubjectRulesReview": _m("SelfSubjectRulesReview", f1=("metadata", OBJECT_META),
                                 f2=("spec", _m("SelfSubjectRulesReviewSpec", f1=("namespace", "string")))),
    # kubectl auth whoami, kubectl create token, client-go's delegated authentication
    "TokenReview": _m("TokenReview", f1=("metadata", OBJECT_META), f2=("spec", _m(
        "TokenReviewSpec", f1=("token", "string"), f2=("audiences", ["string"])))),
    "SelfSubjectReview": _m("SelfSubjectReview", f1=("metadata", OBJECT_META)),
    "TokenRequest": _m("TokenRequest", f1=("metadata", OBJECT_META), f2=("spec", _m(
        "TokenRequestSpec", f1=("audiences", ["string"]), f4=("expirationSeconds", "int?"),
        f3=("boundObjectRef", _m("BoundObjectReference", f1=("kind", "string"), f2=("apiVersion", "string"),
                                 f3=("name", "string"), f4=("uid", "string")))))),
}
class Unsupported(ValueError):
    """A body this decoder cannot read (another kind, or not protobuf at all)."""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise Unsupported("truncated varint")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 70:
            raise Unsupported("varint too long")


def fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of one message."""
    out = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise Unsupported("truncated field")
            value, i = data[i:i + size], i + size
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise Unsupported(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def _entry(raw: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, v in fields(raw):
        if number == 1:
            key = v.decode()
        elif number == 2:
            value = v
    return key, value


def _time(raw: bytes) -> str:
    seconds = message(raw, TIME).get("seconds", 0)
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _empty(wire: int, value: Any) -> bool:
    """Whether a field holds only what Go writes for an unset one: 0, "", or a message of such."""
    if wire == 0:
        return bool(value == 0)
    if wire in (1, 5):
        return not any(value)
    if not value:
        return True
    try:
        return all(_empty(w, v) for _, w, v in fields(value))
    except Unsupported:
        return False


def _intstr(raw: bytes) -> int | str:
    parts = message(raw, INT_OR_STRING)
    return str(parts.get("strVal", "")) if parts.get("type") == 1 else int(parts.get("intVal", 0))


TYPE_META = _m("TypeMeta", f1=("apiVersion", "string"), f2=("kind", "string"))
INT_OR_STRING = _m("IntOrString", f1=("type", "int"), f2=("intVal", "int"), f3=("strVal", "string"))
QUANTITY = _m("Quantity", f1=("string", "string"))


def message(raw: bytes, schema: Message) -> dict[str, Any]:
    """The JSON form of one message. A field this table does not know is refused (Unsupported,
    naming it) unless it holds only what Go writes for an unset field."""
    out: dict[str, Any] = {}
    for number, wire, value in fields(raw):
        if number not in schema.fields:
            if not _empty(wire, value):
                raise Unsupported(f"field {number} of {schema.name} is not read from protobuf bodies")
            continue
        name, kind = schema.fields[number]
        if kind == "string":
            if value:  # Go writes unset strings as empty ones
                out[name] = value.decode()
        elif kind == "int":  # a plain int32/int64: Go's JSON omits it when 0
            if value:
                out[name] = value
        elif kind == "int?":  # a pointer: 0 is a value (replicas: 0, gracePeriodSeconds: 0)
            out[name] = value
        elif kind == "bool":
            out[name] = bool(value)
        elif kind == "time":
            if message(value, TIME).get("seconds"):
                out[name] = _time(value)
        elif kind == "intstr":
            out[name] = _intstr(value)
        elif kind == "quantity":
            if value:
                out[name] = message(value, QUANTITY).get("string", "0")
        elif kind in ("map", "map-bytes", "map-quantity"):
            k, v = _entry(value)
            if kind == "map":
                out.setdefault(name, {})[k] = v.decode()
            elif kind == "map-bytes":
                out.setdefault(name, {})[k] = base64.b64encode(v).decode()
            else:
                out.setdefault(name, {})[k] = message(v, QUANTITY).get("string", "0")
        elif isinstance(kind, list):
            item = kind[0]
            out.setdefault(name, []).append(value.decode() if item == "string" else message(value, item))
        elif isinstance(kind, Message):
            out[name] = message(value, kind)
        elif isinstance(kind, tuple) and kind[0] == "inline":
            out.update(message(value, kind[1]))
    return out


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object of one of :data:`KINDS`."""
    if not body.startswith(MAGIC):
        raise Unsupported("not a Kubernetes protobuf body")
    envelope = {n: v for n, _, v in fields(body[len(MAGIC):])}
    type_meta = message(envelope.get(1, b""), TYPE_META)
    kind = type_meta.get("kind", "")
    schema = KINDS.get(kind)
    if schema is None:
        raise Unsupported(f"protobuf bodies of kind {kind or '(none)'} are not served")
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **message(envelope.get(2, b""), schema)}
