"""The process runtime's log format, pure: what its shim writes (the kubelet's CRI logging
format, a time per line) and what crilog.Reader gives back (the output as written, with times
or from a time on when asked)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kubelet.runtime import crilog, shim

T0 = 1_767_323_045_000_000_000  # 2026-01-02T03:04:05Z in nanoseconds


def written(*chunks: bytes, start: int = T0, step: int = 1_000_000_000) -> bytes:
    """The log file the shim writes for the command's output read in these chunks, a second apart."""
    out, pending = [], b""
    for i, chunk in enumerate(chunks):
        records, pending = shim.records(pending, chunk, start + i * step)
        out.append(records)
    if pending:
        out.append(b"%s stdout P %s\n" % (shim.stamp(start + len(chunks) * step), pending))
    return b"".join(out)


def read(data: bytes, *, split: int | None = None, **kw) -> bytes:
    reader = crilog.Reader(**kw)
    parts = [data] if split is None else [data[:split], data[split:]]
    return b"".join(line for part in parts for line in reader.lines(part)) + b"".join(reader.rest())


def test_records_carry_the_time_and_end_or_continue_a_line():
    assert shim.stamp(T0 + 6) == b"2026-01-02T03:04:05.000000006Z"
    assert written(b"one\ntw", b"o\n") == (b"2026-01-02T03:04:05.000000000Z stdout F one\n"
                                           b"2026-01-02T03:04:06.000000000Z stdout F two\n")
    long = b"x" * (shim.PART_BYTES + 10)  # read before its end came: a part is written
    lines = written(long, b"y\n").splitlines()
    assert [line.split(b" ")[2] for line in lines] == [b"P", b"F"]
    assert read(b"\n".join(lines) + b"\n") == long + b"y\n"


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"")), max_size=6), st.integers(0, 400))
def test_the_output_reads_back_as_it_was_written(chunks, split):
    data = written(*chunks)
    assert read(data) == b"".join(chunks)
    assert read(data, split=min(split, len(data))) == b"".join(chunks)  # however the file is read


def test_timestamps_put_each_lines_time_before_it():
    data = written(b"one\n", b"two\nthr", b"ee")
    assert read(data, timestamps=True) == (b"2026-01-02T03:04:05.000000000Z one\n"
                                           b"2026-01-02T03:04:06.000000000Z two\n"
                                           b"2026-01-02T03:04:08.000000000Z three")  # when it was written out


@pytest.mark.parametrize("since, shown", [
    pytest.param(T0 / 1e9 - 1, b"one\ntwo\nthree\n", id="before-everything"),
    pytest.param(T0 / 1e9 + 0.5, b"two\nthree\n", id="between-lines"),
    pytest.param(T0 / 1e9 + 2, b"three\n", id="at-the-last"),
    pytest.param(T0 / 1e9 + 60, b"", id="after-everything"),
])
def test_since_keeps_the_lines_written_from_then_on(since, shown):
    assert read(written(b"one\n", b"two\n", b"three\n"), since=since) == shown


def test_a_line_not_in_the_format_is_shown_as_it_is_and_has_no_time():
    data = b"Traceback (most recent call last):\n" + written(b"ok\n")
    assert read(data) == b"Traceback (most recent call last):\nok\n"
    assert read(data, timestamps=True) == b"Traceback (most recent call last):\n2026-01-02T03:04:05.000000000Z ok\n"
    assert read(data, since=0) == b"ok\n"
