"""Live exec sessions (kubectl exec -it) of the process runtime, and the output queue the
runtimes' sessions share. The Docker runtime's session is in docker.py, beside its engine calls."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Awaitable, Callable

from .base import STDERR_STREAM, STDOUT_STREAM

CHUNK = 32 * 1024


class OutputQueue:
    """Chunks of output from one or more producers, in order; None once every producer ended."""

    def __init__(self, producers: int) -> None:
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._open = producers

    def put(self, stream: int, data: bytes) -> None:
        self._queue.put_nowait((stream, data))

    def ended(self) -> None:
        """One producer reached its end of file."""
        self._queue.put_nowait(None)

    async def get(self) -> tuple[int, bytes] | None:
        while self._open:
            item = await self._queue.get()
            if item is not None:
                return item
            self._open -= 1
        return None


async def _pump(read: Callable[[], Awaitable[bytes]], stream: int, out: OutputQueue) -> None:
    try:
        while chunk := await read():
            out.put(stream, chunk)
    except OSError:
        pass  # a terminal's master reads EIO once the last process holding it exits
    finally:
        out.ended()


class ProcessSession:
    """A command started beside a process-runtime container: pipes, or a pseudo-terminal whose
    slave is the command's controlling terminal (stdin, stdout and stderr at once)."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int | None) -> None:
        self._proc = proc
        self._master = master
        self._stdin_open = True
        loop = asyncio.get_running_loop()
        if master is not None:
            self._out = OutputQueue(1)
            self._tasks = [asyncio.create_task(_pump(lambda: loop.run_in_executor(None, os.read, master, CHUNK),
                                                     STDOUT_STREAM, self._out))]
        else:
            assert proc.stdout is not None and proc.stderr is not None
            stdout, stderr = proc.stdout, proc.stderr
            self._out = OutputQueue(2)
            self._tasks = [asyncio.create_task(_pump(lambda: stdout.read(CHUNK), STDOUT_STREAM, self._out)),
                           asyncio.create_task(_pump(lambda: stderr.read(CHUNK), STDERR_STREAM, self._out))]

    async def output(self) -> tuple[int, bytes] | None:
        return await self._out.get()

    async def write(self, data: bytes) -> None:
        if not self._stdin_open or self._proc.returncode is not None:
            return
        try:
            if self._master is not None:
                await asyncio.get_running_loop().run_in_executor(None, os.write, self._master, data)
            elif self._proc.stdin is not None:
                self._proc.stdin.write(data)
                await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self._stdin_open = False

    async def close_stdin(self) -> None:
        if not self._stdin_open:
            return
        self._stdin_open = False
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, b"\x04")  # a terminal's end of file is ^D at a line's start
        elif self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()

    async def resize(self, width: int, height: int) -> None:
        if self._master is not None and width > 0 and height > 0:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def wait(self) -> int:
        code = await self._proc.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None
        return 128 - code if code < 0 else code

    async def kill(self) -> None:
        if self._proc.returncode is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)  # the command and what it started
            except ProcessLookupError:  # not a session leader yet (setsid has not run)
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
        await self.wait()


# util-linux's setsid: a session of its own whose controlling terminal is its stdin (the
# terminal's slave), then exec. Not a preexec_fn: uvloop runs that before the child's stdio is
# in place, and only a session leader may take a controlling terminal.
CONTROLLING_TERMINAL = ("setsid", "--ctty", "--wait")


async def start_process_session(argv: list[str], *, cwd: str | None, env: dict[str, str], stdin: bool,
                                tty: bool) -> ProcessSession:
    """Start ``argv`` with pipes, or with a pseudo-terminal when ``tty`` (OSError when it cannot run)."""
    if tty:
        master, slave = os.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                *CONTROLLING_TERMINAL, *argv, cwd=cwd, env={**env, "TERM": env.get("TERM", "xterm")}, stdin=slave,
                stdout=slave, stderr=slave)
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return ProcessSession(proc, master)
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    return ProcessSession(proc, None)
