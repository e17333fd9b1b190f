"""Events as the Kubernetes API serves them, core ``v1`` and ``events.k8s.io/v1``, read from
the ``KYB_EVENTS`` stream where every component records them (``kyb.events.<ns>.<kind>.<name>``,
what `kyb describe` reads). Events are not in a bucket: an Event's resourceVersion is its
stream sequence, a list's the stream's last sequence, and a watch from it follows the stream.

The field selectors kubectl sends (``involvedObject.kind,name,namespace,uid`` for `kubectl
describe`, ``regarding.*`` for events.k8s.io) narrow the subject read when they name one
object. POST publishes the Event on its object's subject, so client libraries' event
recorders work. The conversions between the two versions are pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as _dt
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from kyb import bus, errors
from kyb.cli.streams import EVENTS_STREAM
from kyb.store import events_subject
from schemas import limits
from schemas.helpers import format_time
from schemas.names import generated_name
from schemas.selector import FieldSelector, SelectorError, field_value, parse_fields
from services.apiserver import tables
from services.apiserver.respond import Failure, encoder, json_response

CORE = "v1"
EVENTS_V1 = "events.k8s.io/v1"
GROUP_VERSIONS = (CORE, EVENTS_V1)
READ_TIMEOUT = 2.0  # seconds without a message before a read of the stored events ends

# events.k8s.io/v1 field -> the core v1 field it is stored as.
_RENAMED = {"regarding": "involvedObject", "note": "message", "deprecatedCount": "count",
            "deprecatedFirstTimestamp": "firstTimestamp", "deprecatedLastTimestamp": "lastTimestamp",
            "deprecatedSource": "source", "reportingController": "reportingComponent"}
_SAME = ("metadata", "reason", "type", "eventTime", "action", "reportingInstance", "related", "series")


def to_events_v1(ev: dict[str, Any]) -> dict[str, Any]:
    """A core v1 Event as events.k8s.io/v1 shows it."""
    out: dict[str, Any] = {"apiVersion": EVENTS_V1, "kind": "Event"}
    for key in _SAME:
        if ev.get(key) is not None:
            out[key] = ev[key]
    for new, old in _RENAMED.items():
        if ev.get(old) not in (None, "", {}):
            out[new] = ev[old]
    if not out.get("reportingController") and (ev.get("source") or {}).get("component"):
        out["reportingController"] = ev["source"]["component"]
    if not out.get("eventTime"):  # required in events.k8s.io/v1; a MicroTime
        stamp = ev.get("lastTimestamp") or ev.get("firstTimestamp") or (ev.get("metadata") or {}).get("creationTimestamp")
        if stamp:
            out["eventTime"] = stamp.replace("Z", ".000000Z") if stamp.endswith("Z") and "." not in stamp else stamp
    return out


def to_core(ev: dict[str, Any]) -> dict[str, Any]:
    """An events.k8s.io/v1 Event as the core v1 Event it is stored as."""
    out: dict[str, Any] = {"apiVersion": CORE, "kind": "Event"}
    for key in _SAME:
        if ev.get(key) is not None:
            out[key] = ev[key]
    for new, old in _RENAMED.items():
        if ev.get(new) is not None:
            out[old] = ev[new]
    if ev.get("reportingController") and not (out.get("source") or {}).get("component"):
        out["source"] = {**(out.get("source") or {}), "component": ev["reportingController"]}
    return out


def served(ev: dict[str, Any], gv: str, seq: int) -> dict[str, Any]:
    """A stored Event as ``gv`` serves it, its resourceVersion the stream sequence."""
    ev = copy.deepcopy(ev)
    ev.setdefault("metadata", {})["resourceVersion"] = str(seq)
    ev.setdefault("apiVersion", CORE)
    ev.setdefault("kind", "Event")
    return to_events_v1(ev) if gv == EVENTS_V1 else ev


def _selector_value(doc: dict[str, Any], path: str) -> str:
    if path == "source":  # core v1's "source" selects on source.component
        path = "source.component"
    elif path == "deprecatedSource":
        path = "deprecatedSource.component"
    return field_value(doc, path)


def matcher(selector: FieldSelector) -> Callable[[dict[str, Any]], bool]:
    def matches(doc: dict[str, Any]) -> bool:
        for r in selector.requirements:
            if (_selector_value(doc, r.field) == r.value) != (r.operator == "="):
                return False
        return True

    return matches


def subject(namespace: str | None, selector: FieldSelector) -> str:
    """The narrowest subject holding the events a list or watch asks for."""
    wanted = {r.field.split(".", 1)[1]: r.value for r in selector.requirements
              if r.operator == "=" and r.field.split(".", 1)[0] in ("involvedObject", "regarding") and "." in r.field}
    ns = namespace or wanted.get("namespace") or None
    if wanted.get("kind") and wanted.get("name"):
        if ns is None:
            return events_subject("*", wanted["kind"], wanted["name"])  # kind and name tokens; any namespace
        return events_subject(ns, wanted["kind"], wanted["name"])
    return f"kyb.events.{ns or '*'}.>"


class Events:
    """The events resource's verbs, over the KYB_EVENTS stream."""

    def __init__(self, nc: Any, clock: Callable[[], _dt.datetime]) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.clock = clock

    # -- the stream -------------------------------------------------------------------------

    async def _last_seq(self) -> int:
        return await bus.last_sequence(self.js, EVENTS_STREAM)

    async def stored(self, subj: str) -> tuple[list[tuple[int, dict[str, Any]]], int]:
        """Every stored event on ``subj`` with its sequence (oldest first), and the stream's
        last sequence when the read began."""
        last = await self._last_seq()
        out: list[tuple[int, dict[str, Any]]] = []
        if last == 0:
            return out, 0
        async for seq, doc in self._messages(subj, None, until=last):
            out.append((seq, doc))
        return out, last

    async def _messages(self, subj: str, after: int | None, *, until: int | None) -> AsyncIterator[tuple[int, dict]]:
        try:
            sub = await bus.subscribe_ordered(self.js, subj, stream=EVENTS_STREAM, after=after or 0)
        except errors.KybError:  # no stream yet (no event was ever recorded), or no JetStream
            return
        try:
            if until is not None:
                info = await sub.consumer_info()
                delivered = info.delivered.consumer_seq if info.delivered is not None else 0
                if (info.num_pending or 0) + (delivered or 0) == 0:
                    return
            while True:
                try:
                    msg = await sub.next_msg(timeout=None if until is None else READ_TIMEOUT)
                except TimeoutError:  # nothing more came: the stored events are all read
                    return
                seq = msg.metadata.sequence.stream if msg.metadata is not None else 0
                if until is not None and seq > until:
                    return
                try:
                    doc = limits.decode_json(msg.data, what="event")
                except limits.InputError:
                    doc = None
                if isinstance(doc, dict):
                    yield seq, doc
                if until is not None and (seq >= until or (msg.metadata is not None and msg.metadata.num_pending == 0)):
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # -- verbs ----------------------------------------------------------------------------------

    @staticmethod
    def _selector(request: web.Request) -> FieldSelector:
        try:
            return parse_fields(request.query.get("fieldSelector", ""))
        except (SelectorError, ValueError) as e:
            raise Failure(400, "BadRequest", f"unable to parse requirement: {e}") from None

    async def list(self, request: web.Request, gv: str, namespace: str | None) -> web.Response:
        selector = self._selector(request)
        matches = matcher(selector)
        stored, last = await self.stored(subject(namespace, selector))
        items = [served(doc, gv, seq) for seq, doc in stored]
        items = [d for d in items if matches(d) and (namespace is None
                                                      or (d.get("metadata") or {}).get("namespace") == namespace)]
        start = request.query.get("continue")
        if start:
            try:
                after = int(start)
            except ValueError:
                raise Failure(400, "BadRequest", "continue: Invalid value: the continue token is not valid") from None
            items = [d for d in items if int(d["metadata"]["resourceVersion"]) > after]
        meta: dict[str, Any] = {"resourceVersion": str(last)}
        limit = request.query.get("limit")
        if limit and limit.isdigit() and 0 < int(limit) < len(items):
            items = items[: int(limit)]
            meta["continue"] = items[-1]["metadata"]["resourceVersion"]
        if tables.wants_table(request.headers.get("Accept", "")):
            core = [to_core(d) if gv == EVENTS_V1 else d for d in items]
            doc = tables.table("Event", core, self.clock(), resource_version=str(last),
                               include_object=request.query.get("includeObject", "Metadata"))
            doc["metadata"].update({k: v for k, v in meta.items() if k == "continue"})
            return json_response(doc, content_type=tables.TABLE_MEDIA)
        return json_response({"kind": "EventList", "apiVersion": gv, "metadata": meta, "items": items})

    async def get(self, request: web.Request, gv: str, namespace: str, name: str) -> web.Response:
        stored, _ = await self.stored(f"kyb.events.{namespace}.>")
        for seq, doc in reversed(stored):
            if (doc.get("metadata") or {}).get("name") == name:
                return json_response(served(doc, gv, seq))
        group = "events.k8s.io" if gv == EVENTS_V1 else ""
        raise Failure(404, "NotFound", f'events{"." + group if group else ""} "{name}" not found', name=name,
                      group=group or None, kind="events")

    async def watch(self, request: web.Request, gv: str, namespace: str | None) -> web.StreamResponse:
        selector = self._selector(request)
        matches = matcher(selector)
        subj = subject(namespace, selector)
        rv = request.query.get("resourceVersion")
        after = int(rv) if rv and rv.isdigit() and rv != "0" else None
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        resp = web.StreamResponse(headers={"Content-Type": tables.TABLE_MEDIA if as_table else "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        timeout = request.query.get("timeoutSeconds")
        try:
            async with asyncio.timeout(float(timeout) if timeout and timeout.isdigit() else None):
                async for seq, doc in self._messages(subj, after, until=None):
                    obj = served(doc, gv, seq)
                    if not matches(obj) or (namespace and (obj.get("metadata") or {}).get("namespace") != namespace):
                        continue
                    if as_table:
                        obj = tables.table("Event", [to_core(obj) if gv == EVENTS_V1 else obj], self.clock(),
                                           resource_version=str(seq),
                                           include_object=request.query.get("includeObject", "Metadata"))
                    await resp.write(encoder.encode({"type": "ADDED", "object": obj}) + b"\n")
        except (TimeoutError, ConnectionResetError, asyncio.CancelledError):
            pass
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp

    async def create(self, gv: str, namespace: str, doc: Any) -> web.Response:
        if not isinstance(doc, dict) or doc.get("kind", "Event") != "Event":
            raise Failure(400, "BadRequest", "the request body must be an Event")
        ev = to_core(doc) if gv == EVENTS_V1 else dict(doc)
        meta = dict(ev.get("metadata") or {})
        if meta.get("namespace") not in (None, "", namespace):
            raise Failure(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                          "sent on the request")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise Failure(422, "Invalid", "Event is invalid: metadata.name: Required value",
                              causes=[{"field": "metadata.name", "message": "Required value",
                                       "reason": "FieldValueRequired"}])
            meta["name"] = generated_name(meta["generateName"])
        involved = ev.get("involvedObject") or {}
        if not isinstance(involved, dict) or not involved.get("kind") or not involved.get("name"):
            raise Failure(422, "Invalid", "Event is invalid: involvedObject: Required value",
                          causes=[{"field": "involvedObject", "message": "Required value",
                                   "reason": "FieldValueRequired"}])
        now = format_time(self.clock())
        meta |= {"namespace": namespace, "creationTimestamp": now}
        meta.pop("resourceVersion", None)
        ev["metadata"] = meta
        ev.setdefault("type", "Normal")
        if not ev.get("lastTimestamp") and not ev.get("eventTime"):
            ev["lastTimestamp"] = ev.setdefault("firstTimestamp", now)
        ack = await self.js.publish(events_subject(namespace, str(involved["kind"]), str(involved["name"])),
                                    encoder.encode(ev), stream=EVENTS_STREAM)
        return json_response(served(ev, gv, ack.seq), 201)
