"""Event (core/v1): what happened to an object, as ``kubectl describe`` shows it.

Events travel on ``kyb.events.<namespace>.<kind>.<name>`` and are kept in the ``KYB_EVENTS``
stream with a bounded age rather than in a KV bucket.
"""

from __future__ import annotations

from typing import Literal

from schemas.meta import Base, Object, ObjectReference


class EventSource(Base, kw_only=True, frozen=True):
    component: str = ""
    host: str = ""


class Event(Object, kw_only=True, frozen=True):
    API_VERSION = "v1"
    KIND = "Event"

    involvedObject: ObjectReference = ObjectReference()
    reason: str = ""
    message: str = ""
    type: Literal["Normal", "Warning"] = "Normal"
    count: int = 1
    firstTimestamp: str | None = None
    lastTimestamp: str | None = None
    eventTime: str | None = None
    source: EventSource = EventSource()
    reportingComponent: str = ""
    reportingInstance: str = ""
    action: str = ""
