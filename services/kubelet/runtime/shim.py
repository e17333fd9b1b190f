"""The per-container keeper of the process runtime (what conmon or containerd-shim are to real runtimes).

Run as ``python shim.py <record.json>``: it detaches (fork, own session), starts the
container's command in its own process group with output appended to the log file, writes the
record (pids, start time) and lets its launcher return; then it waits for the command and writes
the exit code. Because the shim, not the kubelet, is the command's parent, the exit code is
captured even when the kubelet restarts meanwhile, and a new kubelet adopts the container from
the record alone. Standard library only, so it starts fast and outside the project's imports.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time


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
    try:
        proc = subprocess.Popen(
            record["argv"],
            cwd=record["cwd"],
            env=record["env"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
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
        return 0
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
    record.update(state="exited", exit_code=128 - code if code < 0 else code, finished_at=time.time())
    _write(path, record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
