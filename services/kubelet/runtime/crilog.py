"""Reading the process runtime's container logs, which its shim (shim.py, standard library
only, so it cannot import this) writes in the kubelet's CRI logging format: one record per
line, ``<time> <stream> <P|F> <text>``, the time RFC 3339 with nine digits of nanoseconds in
UTC (so times compare as bytes), F ending a line and P a part of one.

A :class:`Reader` turns the file's bytes, fed as they are read, back into the output the
container wrote (``kyb logs`` shows what it always showed), each line optionally after the time
it was written (``kubectl logs --timestamps``) and only from a time on (``--since``). A line not
in the format (a file from before the format, a shim's own error) is shown as it is, without a
time, and is left out when a since is asked for. Pure: no I/O.
"""

from __future__ import annotations

import re
import time

_RECORD = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (?:stdout|stderr) ([PF]) (.*)", re.S)


def stamp(seconds: float) -> bytes:
    """A UNIX time as the records write it: 2026-01-02T03:04:05.000000006Z."""
    ns = round(seconds * 1e9)
    whole, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)).encode() + b".%09dZ" % frac


class Reader:
    """The lines of one log, rendered: ``timestamps`` puts each line's time and a space before
    it; ``since`` (a UNIX time) keeps only the lines written at or after it."""

    def __init__(self, *, timestamps: bool = False, since: float | None = None) -> None:
        self.timestamps = timestamps
        self.after = stamp(since) if since is not None else None
        self._rest = b""  # a file line not yet ended (the writer is between two writes)
        self._part = b""  # the parts of a line not yet ended by an F record
        self._part_time: bytes | None = None

    def lines(self, data: bytes) -> list[bytes]:
        """The lines completed by ``data``, the next bytes of the file."""
        chunk = self._rest + data
        end = chunk.rfind(b"\n")
        if end < 0:
            self._rest = chunk
            return []
        self._rest = chunk[end + 1 :]
        out: list[bytes] = []
        for record in chunk[:end].split(b"\n"):
            line = self._record(record, ended=True)
            if line is not None:
                out.append(line)
        return out

    def rest(self) -> list[bytes]:
        """At the end of a log that is complete: what is left, a line without its newline."""
        out = []
        if self._rest:
            rest, self._rest = self._rest, b""
            line = self._record(rest, ended=False)
            if line is not None:
                out.append(line)
        if self._part:
            out += self._render(self._part_time, self._part)
            self._part, self._part_time = b"", None
        return out

    def _record(self, record: bytes, *, ended: bool) -> bytes | None:
        m = _RECORD.fullmatch(record)
        if m is None:  # not a record: the line as it is
            return self._one(None, record + b"\n" if ended else record)
        when, tag, text = m.group(1), m.group(2), m.group(3)
        if not self._part:
            self._part_time = when
        self._part += text
        if tag == b"P":
            return None
        line, first = self._part + b"\n", self._part_time
        self._part, self._part_time = b"", None
        return self._one(first, line)

    def _one(self, when: bytes | None, text: bytes) -> bytes | None:
        out = self._render(when, text)
        return out[0] if out else None

    def _render(self, when: bytes | None, text: bytes) -> list[bytes]:
        if self.after is not None and (when is None or when < self.after):
            return []
        return [when + b" " + text if self.timestamps and when is not None else text]
