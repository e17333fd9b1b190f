"""SPDY/3.1 framing of the apiserver's port forward (services/apiserver/spdy.py), pure."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.apiserver import spdy


def _syn_stream(stream_id: int, headers: dict[str, str], codec: spdy.Headers) -> bytes:
    body = struct.pack(">IIH", stream_id, 0, 0) + codec.encode(headers)
    return spdy.control(spdy.SYN_STREAM, 0, body)


def test_the_dictionary_is_spdy3s():
    assert len(spdy.DICTIONARY) == 1423 and spdy.DICTIONARY.endswith(b"enq=0.")
    # a peer primed with the C string's trailing NUL is understood too
    c = zlib.compressobj(zdict=spdy.DICTIONARY + b"\x00")
    raw = struct.pack(">I", 1) + struct.pack(">I", 4) + b"port" + struct.pack(">I", 2) + b"80"
    assert spdy.Headers().decode(c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH)) == {"port": "80"}


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_frames_come_out_whole_however_the_bytes_are_cut(cuts):
    client = spdy.Headers()
    stream = _syn_stream(1, {"streamtype": "data", "port": "8080", "requestid": "0"}, client)
    stream += spdy.data(1, b"hello") + spdy.data(1, b"", fin=True) + spdy.control(spdy.PING, 0, b"\x00\x00\x00\x01")
    reader, server, frames, at = spdy.Reader(), spdy.Headers(), [], 0
    for n in cuts * 20:
        frames += reader.feed(stream[at:at + n])
        at += n
        if at >= len(stream):
            break
    frames += reader.feed(stream[at:])
    syn, hello, fin, ping = frames
    assert spdy.syn_stream(syn, server) == (1, {"streamtype": "data", "port": "8080", "requestid": "0"})
    assert (hello.stream_id, hello.data, hello.fin) == (1, b"hello", False)
    assert fin.fin and not fin.data
    assert (ping.type, ping.data) == (spdy.PING, b"\x00\x00\x00\x01")


def test_replies_decode_on_the_other_side():
    server, client = spdy.Headers(), spdy.Headers()
    for stream_id in (1, 3, 5):  # one zlib stream for the connection
        [frame] = spdy.Reader().feed(spdy.syn_reply(stream_id, server))
        assert frame.type == spdy.SYN_REPLY and spdy.stream_of(frame) == stream_id
        assert client.decode(frame.data[4:]) == {}


def test_bad_input_is_a_protocol_error():
    with pytest.raises(spdy.ProtocolError):
        spdy.Reader().feed(struct.pack(">HHI", 0x8002, 1, 0))  # SPDY/2
    with pytest.raises(spdy.ProtocolError):
        spdy.Reader().feed(struct.pack(">II", 1, spdy.MAX_FRAME + 1))
    with pytest.raises(spdy.ProtocolError):
        spdy.Headers().decode(b"not zlib")
