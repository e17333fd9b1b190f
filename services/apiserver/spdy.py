"""The server side of SPDY/3.1 framing, as much of it as ``kubectl port-forward`` uses (it
speaks SPDY inside a WebSocket, subprotocol ``SPDY/3.1+portforward.k8s.io``): frames read
from a byte stream, SYN_STREAM headers decompressed, SYN_REPLY, DATA, RST_STREAM, PING and
GOAWAY written. Flow control (WINDOW_UPDATE) is read and ignored, as moby/spdystream, the Go
client, ignores it too. Pure.

Header blocks are one zlib stream per direction, primed with the SPDY/3 dictionary (the
protocol's constant, below).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_REFUSED_STREAM, RST_CANCEL = 1, 2, 3, 5
MAX_FRAME = 1 << 20  # what a peer may send in one frame before the connection is refused

# SPDY/3's header compression dictionary (draft 3, section 2.6.10.1).
DICTIONARY = (
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\x06delete"
    b"\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding"
    b"\x00\x00\x00\x0faccept-language\x00\x00\x00\raccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow"
    b"\x00\x00\x00\rauthorization\x00\x00\x00\rcache-control\x00\x00\x00\nconnection\x00\x00\x00\x0ccontent-base"
    b"\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length"
    b"\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\rcontent-range"
    b"\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect"
    b"\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match"
    b"\x00\x00\x00\x11if-modified-since\x00\x00\x00\rif-none-match\x00\x00\x00\x08if-range"
    b"\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\rlast-modified\x00\x00\x00\x08location"
    b"\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate"
    b"\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after"
    b"\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding"
    b"\x00\x00\x00\x07upgrade\x00\x00\x00\nuser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning"
    b"\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status"
    b"\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public"
    b"\x00\x00\x00\nset-cookie\x00\x00\x00\nkeep-alive\x00\x00\x00\x06origin"
    b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    b"203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    b"403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    b"Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    b"chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    b"text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


class ProtocolError(ValueError):
    """The peer sent something that is not SPDY/3.1."""


@dataclass(frozen=True)
class Control:
    type: int
    flags: int
    data: bytes


@dataclass(frozen=True)
class Data:
    stream_id: int
    flags: int
    data: bytes

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class Reader:
    """Frames out of a byte stream fed in pieces of any size."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Control | Data]:
        self._buf += data
        out: list[Control | Data] = []
        while len(self._buf) >= 8:
            first, second = struct.unpack_from(">II", self._buf)
            length = second & 0xFFFFFF
            if length > MAX_FRAME:
                raise ProtocolError(f"a frame of {length} bytes")
            if len(self._buf) < 8 + length:
                break
            body = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            flags = second >> 24
            if first & 0x80000000:
                version = (first >> 16) & 0x7FFF
                if version != VERSION:
                    raise ProtocolError(f"SPDY version {version}")
                out.append(Control(first & 0xFFFF, flags, body))
            else:
                out.append(Data(first & 0x7FFFFFFF, flags, body))
        return out


class Headers:
    """One direction's header compression state (the zlib streams live as long as the connection)."""

    MAX_DECOMPRESSED = 64 * 1024

    def __init__(self) -> None:
        self._in: zlib._Decompress | None = None
        self._out = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zdict=DICTIONARY)

    def decode(self, block: bytes) -> dict[str, str]:
        if self._in is None:
            self._in = zlib.decompressobj(zdict=_dictionary_of(block))
        try:
            raw = self._in.decompress(block, self.MAX_DECOMPRESSED)
        except zlib.error as e:
            raise ProtocolError(f"header block: {e}") from None
        if self._in.unconsumed_tail:
            raise ProtocolError("header block too large")
        try:
            (count,) = struct.unpack_from(">I", raw)
            at, out = 4, {}
            for _ in range(count):
                (n,) = struct.unpack_from(">I", raw, at)
                name = raw[at + 4:at + 4 + n].decode()
                at += 4 + n
                (n,) = struct.unpack_from(">I", raw, at)
                value = raw[at + 4:at + 4 + n].decode()
                at += 4 + n
                out[name] = value
        except (struct.error, UnicodeDecodeError) as e:
            raise ProtocolError(f"header block: {e}") from None
        return out

    def encode(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            n, v = name.lower().encode(), value.encode()
            raw += struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v
        return self._out.compress(raw) + self._out.flush(zlib.Z_SYNC_FLUSH)


def _dictionary_of(block: bytes) -> bytes:
    """The dictionary a zlib stream names (DICTID): the SPDY/3 one, which some implementations
    end with the NUL of its C string."""
    if len(block) >= 6 and block[1] & 0x20:
        (wanted,) = struct.unpack_from(">I", block, 2)
        for candidate in (DICTIONARY, DICTIONARY + b"\x00"):
            if zlib.adler32(candidate) == wanted:
                return candidate
    return DICTIONARY


def control(type_: int, flags: int, body: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, type_, (flags << 24) | len(body)) + body


def data(stream_id: int, payload: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(payload)) + payload


def syn_stream(frame: Control, headers: Headers) -> tuple[int, dict[str, str]]:
    """(stream id, headers) of a SYN_STREAM frame."""
    if len(frame.data) < 10:
        raise ProtocolError("short SYN_STREAM")
    (stream_id,) = struct.unpack_from(">I", frame.data)
    return stream_id & 0x7FFFFFFF, headers.decode(frame.data[10:])


def syn_reply(stream_id: int, headers: Headers, values: dict[str, str] | None = None) -> bytes:
    return control(SYN_REPLY, 0, struct.pack(">I", stream_id & 0x7FFFFFFF) + headers.encode(values or {}))


def stream_of(frame: Control) -> int:
    """The stream a RST_STREAM (or WINDOW_UPDATE) names."""
    if len(frame.data) < 4:
        raise ProtocolError("short frame")
    return struct.unpack_from(">I", frame.data)[0] & 0x7FFFFFFF


def rst_stream(stream_id: int, status: int) -> bytes:
    return control(RST_STREAM, 0, struct.pack(">II", stream_id & 0x7FFFFFFF, status))


def goaway(last_stream: int, status: int = 0) -> bytes:
    return control(GOAWAY, 0, struct.pack(">II", last_stream & 0x7FFFFFFF, status))
