"""kyb's errors as the Kubernetes API writes them: metav1.Status with reason, code and
details (name, group, kind and causes, one per FieldError). Pure."""

from __future__ import annotations

from typing import Any

from kyb import errors

# The first words of a FieldError's message -> metav1.CauseType.
_CAUSES = (
    ("Required value", "FieldValueRequired"),
    ("Unsupported value", "FieldValueNotSupported"),
    ("Duplicate value", "FieldValueDuplicate"),
    ("Too long", "FieldValueTooLong"),
    ("Too many", "FieldValueTooMany"),
    ("Forbidden", "FieldValueForbidden"),
    ("Not found", "FieldValueNotFound"),
    ("unknown field", "FieldValueInvalid"),
)


def cause_type(message: str) -> str:
    for prefix, reason in _CAUSES:
        if message.startswith(prefix):
            return reason
    return "FieldValueInvalid"


def status(code: int, reason: str, message: str, *, name: str | None = None, group: str | None = None,
           kind: str | None = None, causes: list[dict[str, str]] | None = None,
           retry_after: float | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    if causes:
        details["causes"] = causes
    if retry_after is not None:
        details["retryAfterSeconds"] = max(1, int(retry_after))
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": message, "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


def from_error(e: errors.KybError, *, kind: str | None = None, plural: str | None = None, group: str = "",
               name: str | None = None) -> dict[str, Any]:
    causes = [{"reason": cause_type(d.message), "message": d.message, "field": d.field} for d in e.details]
    message = e.message
    if isinstance(e, errors.Invalid) and kind and name and "is invalid" not in message:
        fields = ", ".join(f"{d.field}: {d.message}" for d in e.details)
        qualified = f"{kind}.{group}" if group else kind
        message = f'{qualified} "{name}" is invalid: {fields or message}'
    retry = e.delay if isinstance(e, errors.Temporary) else None
    reason = e.reason if e.reason != "Unauthorized" else "ServiceUnavailable"
    code = e.code if e.code != 401 else 503  # NATS refusing the apiserver is not the client's fault
    return status(code, reason, message, name=name, group=group or None, kind=plural, causes=causes or None,
                  retry_after=retry)


def success(name: str, plural: str, group: str, uid: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    if uid:
        details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
