"""The one error tree every service and the CLI share.

    KybError                      code  reason
    ├── NotFound                  404   NotFound
    ├── AlreadyExists             409   AlreadyExists
    ├── Conflict                  409   Conflict        (a CAS write lost: re-read, recompute, retry)
    ├── Invalid(details)          422   Invalid         (details: [FieldError(field, message)])
    ├── BadRequest                400   BadRequest      (undecodable payload, unknown kind)
    ├── TooLarge                  413   RequestEntityTooLarge
    ├── Forbidden                 403   Forbidden
    ├── Temporary(delay)          503   ServiceUnavailable  (retry after `delay` seconds)
    │   ├── Unreachable           503   ServiceUnavailable  (NATS cannot be reached)
    │   │   ├── Unauthenticated   401   Unauthorized    (NATS answered and refused the credentials)
    │   │   └── NoResponders      503   ServiceUnavailable  (nobody subscribes to a request's subject)
    │   ├── TimedOut              503   ServiceUnavailable  (a request got no reply in time)
    │   └── TooManyRequests       429   TooManyRequests     (over a concurrency or time budget)
    └── Permanent                 500   InternalError

NATS and docker-py exceptions become these in the adapters (``raise ... from e``) and
nowhere else. Every error travels over the bus in one shape, ``to_status()``:
``{kind: Status, code, reason, message, details: [{field, message}]}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class KybError(Exception):
    code: ClassVar[int] = 500
    reason: ClassVar[str] = "InternalError"

    def __init__(self, message: str, details: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[FieldError] = list(details or [])

    def to_status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
            "details": [{"field": d.field, "message": d.message} for d in self.details],
        }

    def __str__(self) -> str:
        if not self.details:
            return self.message
        fields = "; ".join(f"{d.field}: {d.message}" for d in self.details)
        return f"{self.message} ({fields})" if fields not in self.message else self.message


class NotFound(KybError):
    code = 404
    reason = "NotFound"


class AlreadyExists(KybError):
    code = 409
    reason = "AlreadyExists"


class Conflict(KybError):
    code = 409
    reason = "Conflict"


class Invalid(KybError):
    code = 422
    reason = "Invalid"


class BadRequest(KybError):
    code = 400
    reason = "BadRequest"


class TooLarge(KybError):
    code = 413
    reason = "RequestEntityTooLarge"


class Forbidden(KybError):
    code = 403
    reason = "Forbidden"


class Temporary(KybError):
    code = 503
    reason = "ServiceUnavailable"

    def __init__(self, message: str, delay: float = 1.0, details: list[FieldError] | None = None) -> None:
        super().__init__(message, details)
        self.delay = delay

    def to_status(self) -> dict[str, Any]:
        return {**super().to_status(), "retryAfterSeconds": self.delay}


class Unreachable(Temporary):
    pass


class NoResponders(Unreachable):
    """NATS answered that nobody subscribes to the subject a request was sent on."""


class TimedOut(Temporary):
    """A request was sent and no reply came within its timeout."""


class TooManyRequests(Temporary):
    code = 429
    reason = "TooManyRequests"


class Unauthenticated(Unreachable):
    """NATS was reached and refused who we said we are; shown like Unreachable (one line, exit 1)."""

    code = 401
    reason = "Unauthorized"


class Permanent(KybError):
    code = 500
    reason = "InternalError"


_BY_REASON: dict[str, type[KybError]] = {
    cls.reason: cls
    for cls in (NotFound, AlreadyExists, Conflict, Invalid, BadRequest, TooLarge, Forbidden, Temporary, TooManyRequests,
                Unauthenticated, Permanent)
}


def from_status(status: dict[str, Any]) -> KybError:
    """Rebuild the typed error from its wire shape (the inverse of ``to_status``)."""
    cls = _BY_REASON.get(str(status.get("reason", "")), KybError)
    details = [FieldError(str(d.get("field", "")), str(d.get("message", ""))) for d in status.get("details") or []]
    # By keyword: Temporary's second positional parameter is its delay, not the details.
    if issubclass(cls, Temporary):
        try:
            delay = float(status.get("retryAfterSeconds", 1.0))
        except (TypeError, ValueError):
            delay = 1.0
        return cls(str(status.get("message", "")), delay=delay, details=details)
    return cls(str(status.get("message", "")), details=details)
