"""Events: what an object's controllers tell about it, as v1 Event objects on the subjects
``kyb.events.<namespace>.<kind>.<name>``, kept for an hour in the stream ``KYB_EVENTS``.
Anyone publishes (best effort; ``Store.record_event``), ``kyb describe``, ``kyb events`` and
the Kubernetes API read them. Pure: the shapes, the names and the stream's configuration.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from nats.js import api

from kyb import buckets
from schemas.meta import Object

EVENTS_STREAM = "KYB_EVENTS"
EVENTS_SUBJECT = "kyb.events"
EVENTS_MAX_AGE_S = 3600.0
EVENTS_MAX_BYTES = 256 * 1024 * 1024


def stream_config(replicas: int = 1) -> api.StreamConfig:
    return buckets.log_stream(EVENTS_STREAM, EVENTS_SUBJECT, max_age=EVENTS_MAX_AGE_S, max_bytes=EVENTS_MAX_BYTES,
                              replicas=replicas)


def subject_token(name: str) -> str:
    """An object name as one subject token: names may hold dots (DNS subdomains), tokens may not."""
    return name if "." not in name else "b64_" + base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def events_subject(namespace: str | None, kind: str, name: str) -> str:
    return f"{EVENTS_SUBJECT}.{namespace or 'default'}.{kind}.{subject_token(name)}"


def event_object(obj: Object, reason: str, message: str, type: str, source: str, now: str) -> dict[str, Any]:
    """The v1 Event about ``obj``, named as Kubernetes names them (``<name>.<hex nanoseconds>``)."""
    meta = obj.metadata
    ns = meta.namespace or "default"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.name}.{time.time_ns():x}", "namespace": ns, "creationTimestamp": now},
        "involvedObject": {
            "apiVersion": obj.apiVersion,
            "kind": obj.kind,
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resourceVersion,
        },
        "reason": reason,
        "message": message,
        "type": type,
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": source},
    }
