"""The per-container keeper of the process runtime (what conmon or containerd-shim are to real runtimes).

Run as ``python shim.py <record.json>``: it detaches (fork, own session), starts the
container's command in its own process group with its output on a pipe, writes the record
(pids, start time) and lets its launcher return; then it copies the output into the log file and
waits for the command, and writes the exit code. Because the shim, not the kubelet, is the
command's parent, the exit code is captured even when the kubelet restarts meanwhile, and a new
kubelet adopts the container from the record alone. Standard library only, so it starts fast
and outside the project's imports.

The log file is in the kubelet's CRI logging format, one record per line, each with the time
it was read (as conmon writes it): ``<RFC3339 time, nanoseconds, UTC> <stream> <P|F> <text>``,
F ending a line, P a part of one (a line longer than ``PART_BYTES``, or the last bytes of the
output when they end without a newline). stdout and stderr share one pipe, as they shared the
log file before, so their order is kept; the stream is written as ``stdout``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time

PART_BYTES = 16 * 1024  # a longer line is written as parts
DRAIN_SECONDS = 2.0  # after the command exits, how long its output may still take to arrive


def stamp(ns: int) -> bytes:
    """``ns`` since the epoch as RFC 3339 with nanoseconds, UTC: 2026-01-02T03:04:05.000000006Z."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%09dZ" % frac


def records(pending: bytes, chunk: bytes, now_ns: int) -> tuple[bytes, bytes]:
    """The CRI log records of ``chunk`` read after ``pending`` (the start of a line read
    before), and the start of a line still open."""
    lines = (pending + chunk).split(b"\n")
    rest = lines.pop()
    ts = stamp(now_ns)
    out = [b"%s stdout F %s\n" % (ts, line) for line in lines]
    while len(rest) >= PART_BYTES:
        out.append(b"%s stdout P %s\n" % (ts, rest[:PART_BYTES]))
        rest = rest[PART_BYTES:]
    return b"".join(out), rest


def _copy(pipe: int, log: int) -> None:
    """Everything the command writes, as CRI records, until every writer has closed the pipe."""
    pending = b""
    while True:
        try:
            chunk = os.read(pipe, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            if pending:
                os.write(log, b"%s stdout P %s\n" % (stamp(time.time_ns()), pending))
            return
        out, pending = records(pending, chunk, time.time_ns())
        if out:
            os.write(log, out)


def _write(path: str, record: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def _limits(memory_bytes: int | None):
    def apply() -> None:
        if memory_bytes:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return apply


def main(path: str) -> int:
    with open(path) as f:
        record = json.load(f)
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:  # the launcher: return once the keeper says the command runs (or failed)
        os.close(ready_w)
        return 0 if os.read(ready_r, 1) == b"1" else 1
    os.close(ready_r)
    os.setsid()  # the keeper: outlives the launcher and the kubelet
    log = os.open(record["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(log, 2)  # let go of the launcher's pipes; a keeper failure shows in the container's log
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)  # handlers (unlike SIG_IGN) reset to default in the command
    record["shim_pid"] = os.getpid()
    record["shim_start_ticks"] = start_ticks(os.getpid())
    out_r, out_w = os.pipe()
    try:
        proc = subprocess.Popen(
            record["argv"],
            cwd=record["cwd"],
            env=record["env"],
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=out_w,
            process_group=0,
            preexec_fn=_limits(record.get("memory_limit_bytes"))
            if record.get("memory_limit_bytes")
            else None,
        )
    except OSError as e:
        record.update(
            state="exited",
            exit_code=127 if e.errno == errno.ENOENT else 126,
            error=f"cannot run {record['argv'][0]!r}: {e.strerror}",
            started_at=time.time(),
            finished_at=time.time(),
        )
        _write(path, record)
        os.write(ready_w, b"1")
        os.close(out_r)
        os.close(out_w)
        return 0
    os.close(out_w)
    copier = threading.Thread(target=_copy, args=(out_r, log), daemon=True)
    copier.start()
    record.update(
        state="running",
        pid=proc.pid,
        pgid=proc.pid,
        start_ticks=start_ticks(proc.pid),
        started_at=time.time(),
    )
    _write(path, record)
    os.write(ready_w, b"1")
    os.close(ready_w)
    code = proc.wait()
    # The log is complete before the exit is recorded (a followed log ends at the exit); a
    # process the command left behind and still holding the pipe gets DRAIN_SECONDS.
    copier.join(DRAIN_SECONDS)
    record.update(state="exited", exit_code=128 - code if code < 0 else code, finished_at=time.time())
    _write(path, record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
