"""What an HTTP request asks, as authorization sees it (Kubernetes' RequestInfoFactory,
``apiserver/pkg/endpoints/request/requestinfo.go``): a resource request under ``/api`` or
``/apis`` names its verb (``get`` and ``list``, ``watch``, ``create``, ``update``, ``patch``,
``delete`` and ``deletecollection``), API group and version, namespace, resource, name and
subresource; any other path (``/version``, ``/healthz``, ``/api``, ``/apis/apps/v1``,
``/openapi/v3``) is a non-resource request whose verb is the method's. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas import names
from services.apiserver.rbac import Attributes, UserInfo

API_PREFIXES = ("api", "apis")
GROUPLESS = "api"
NAMESPACE_SUBRESOURCES = ("status", "finalize")
METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool


def _exact_name(field_selector: str) -> str:
    """The name a field selector pins with ``metadata.name=<name>`` (or ``==``), if valid."""
    for term in field_selector.split(","):
        key, op, value = term.partition("==") if "==" in term else term.partition("=")
        if op and key.strip() == "metadata.name" and not key.strip().endswith("!"):
            value = value.strip()
            return value if value and not names.path_segment_name(value) else ""
    return ""


def attributes(user: UserInfo, method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """The authorization attributes of ``method path?query`` made by ``user``."""
    plain = Attributes(user=user, verb=method.lower(), resource_request=False, path=path)
    parts = [p for p in path.strip("/").split("/") if p] if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return plain
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix != GROUPLESS:
        if len(parts) < 3:
            return plain
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    verb = METHOD_VERBS.get(method.upper(), "")
    if parts[0] == "watch":  # the deprecated /watch/ paths
        if len(parts) < 2:
            return plain
        verb, parts = "watch", parts[1:]
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "") in TRUE else "list"
        name = _exact_name(query.get("fieldSelector", ""))
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(user=user, verb=verb, resource_request=True, path=path, api_group=group, api_version=version,
                      resource=resource, subresource=subresource, namespace=namespace, name=name)
