"""Sockets and commands in another network namespace (``/run/netns/<name>`` or
``/proc/<pid>/ns/net``), for node agents told to work in a node's namespace (``netns`` option).

A socket belongs to the namespace its creating thread was in, so :func:`socket_in` switches a
short-lived thread into the namespace (``setns(2)``), creates the socket there and hands it
back; the rest of the process never leaves its own namespace. Needs CAP_SYS_ADMIN.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import socket
import threading

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setns(fd: int) -> None:
    """Move the calling thread (only) into the namespace open at ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def socket_in(netns: str | None, family: int, kind: int) -> socket.socket:
    """A new socket created in ``netns`` (our own namespace when None)."""
    if not netns:
        return socket.socket(family, kind)
    result: list[socket.socket | BaseException] = []

    def create() -> None:
        try:
            target = os.open(netns, os.O_RDONLY)
            try:
                setns(target)  # this thread only; it ends right after
            finally:
                os.close(target)
            result.append(socket.socket(family, kind))
        except BaseException as e:  # handed to the caller's thread
            result.append(e)

    t = threading.Thread(target=create, name="netns-socket")
    t.start()
    t.join()
    out = result[0]
    if isinstance(out, BaseException):
        raise out
    return out


def command(netns: str | None, *argv: str) -> list[str]:
    """``argv`` run in ``netns`` through nsenter (as is without one)."""
    return ["nsenter", f"--net={netns}", "--", *argv] if netns else list(argv)


class CommandError(Exception):
    """A command run by :func:`run` exited non-zero; the message has its stderr."""


async def run(netns: str | None, *argv: str, stdin: str | None = None, check: bool = True) -> str:
    """``argv`` in ``netns`` (ours when None); its stdout. Non-zero exit: CommandError with
    stderr, unless ``check`` is false."""
    proc = await asyncio.create_subprocess_exec(
        *command(netns, *argv), stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if check and proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()[:2000]}")
    return out.decode()
