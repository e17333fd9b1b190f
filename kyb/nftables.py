"""nftables transactions from a long-lived libnftables context, in one network namespace.

``nft -f -`` costs a process start, a library initialisation and a fresh read of the ruleset
for every transaction; with the proxy's 11,000 chains that is most of an EndpointSlice change's
latency. :class:`Nftables` keeps one libnftables context (``libnftables.so.1``, Debian's
``libnftables1``, which the ``nft`` binary itself is built on) in a thread of its own that has
entered the namespace once (a netlink socket belongs to the namespace it was opened in, so the
context is made inside it). Scripts are the same text ``nft -f`` reads, and each call is one
atomic transaction. Calls run on that thread, so the event loop never waits on the kernel;
ctypes releases the GIL while the library works.

Where the library cannot be loaded, the same calls run ``nft -f -`` (through ``nsenter`` for
another namespace).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import os
from typing import Any

from kyb.netns import CommandError, run, setns

LIBRARY = "libnftables.so.1"


class NftError(Exception):
    """A transaction the kernel or the parser refused; nothing of it was applied."""


def _load() -> Any:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("nftables") or LIBRARY)
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_run_cmd_from_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_filename.restype = ctypes.c_int
    return lib


class Nftables:
    """``run(script)``: one transaction in ``netns`` (a path such as ``/run/netns/x`` or
    ``/proc/<pid>/ns/net``; ours when None)."""

    def __init__(self, netns: str | None = None, *, library: bool = True) -> None:
        self.netns = netns
        self._lib: Any = _load() if library else None
        self._ctx: int | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def in_process(self) -> bool:
        return self._lib is not None

    def _enter(self) -> None:
        if self.netns:
            fd = os.open(self.netns, os.O_RDONLY)
            try:
                setns(fd)  # this worker thread only, for its whole life
            finally:
                os.close(fd)
        ctx = self._lib.nft_ctx_new(0)
        if not ctx:
            raise NftError("libnftables: cannot create a context")
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)
        self._ctx = ctx

    def _run(self, script: str) -> str:
        if self._ctx is None:
            self._enter()
        # From a file, not a buffer: libnftables 1.0 quotes the wrong line of a buffer in its
        # error messages, and a file's errors read like ``nft -f``'s ("<file>:2:18-23: Error: ...").
        fd = os.memfd_create("nft-script")
        try:
            os.write(fd, script.encode())
            name = f"/proc/self/fd/{fd}"
            rc = self._lib.nft_run_cmd_from_filename(self._ctx, name.encode())
        finally:
            os.close(fd)
        out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
        err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise NftError(err.replace(f"{name}:", "line ").strip()[:2000] or f"nft: transaction refused ({rc})")
        return out

    async def run(self, script: str) -> str:
        """Apply ``script`` (``nft -f`` syntax) as one transaction; its output (for ``list``)."""
        if self._lib is None:
            return await self._exec(script)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nftables")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, script)

    async def _exec(self, script: str) -> str:
        try:
            return await run(self.netns, "nft", "-f", "-", stdin=script)
        except CommandError as e:
            raise NftError(str(e).removeprefix("nft -f -: ") or "nft refused the transaction") from None

    def close(self) -> None:
        """Free the context (on its own thread) and stop the thread."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            pool.submit(self._lib.nft_ctx_free, ctx).result()
        pool.shutdown(wait=True)
