"""The nginx data plane: one nginx master process owned by the ingress service, configured
from the routing table and reloaded gracefully, as ingress-nginx does.

Each :meth:`NginxPlane.apply` renders the configuration (:mod:`services.ingress.nginxconf`);
when it differs from the running one, certificate files are written, ``nginx -t`` checks it,
and a SIGHUP makes the master start new workers while the old ones finish the requests they
hold, so rule changes never drop a request in flight. A configuration nginx refuses is logged
and the running one stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import tempfile
from collections.abc import Callable

import msgspec

from services.ingress.nginxconf import Listen, certificate_file, certificates, render
from services.ingress.plan import Certificate, Table


def nginx_binary() -> str | None:
    """The nginx executable, or None when nginx is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


class NginxPlane:
    def __init__(self, address: str, http_port: int, https_port: int, *, binary: str | None = None,
                 on_error: Callable[[str, Exception], None] | None = None, worker_processes: int = 1) -> None:
        self.listen = Listen(address=address, http_port=http_port, https_port=https_port)
        self.binary = binary or nginx_binary()
        if self.binary is None:
            raise FileNotFoundError("nginx is not installed (ingress_plane=nginx needs it on PATH)")
        self.on_error = on_error
        self.worker_processes = worker_processes
        self._dir = tempfile.TemporaryDirectory(prefix="kyb-ingress-nginx-")
        self.workdir = self._dir.name
        self.conf = os.path.join(self.workdir, "nginx.conf")
        self.proc: asyncio.subprocess.Process | None = None
        self.rendered = ""
        self.reloads = 0
        self._checked: dict[str, bool] = {}  # certificate file name -> loads
        for sub in ("certs", "tmp"):
            os.makedirs(os.path.join(self.workdir, sub), mode=0o700, exist_ok=True)

    async def start(self) -> None:
        self.rendered = render(Table(), self.listen, self.workdir, worker_processes=self.worker_processes)
        with open(self.conf, "w") as f:
            f.write(self.rendered)
        await self._check()
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "-c", self.conf, "-p", self.workdir,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await self._wait_listening()

    async def _wait_listening(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.proc is not None and self.proc.returncode is not None:
                with contextlib.suppress(OSError), open(os.path.join(self.workdir, "error.log")) as f:
                    raise OSError(f"nginx exited: {f.read().strip()[-2000:]}")
                raise OSError("nginx exited")
            try:
                _, w = await asyncio.open_connection(self.listen.address, self.listen.http_port)
                w.close()
                return
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _check(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.binary, "-t", "-q", "-c", self.conf, "-p", self.workdir,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise ValueError(f"nginx -t: {err.decode(errors='replace').strip()}")

    def _write_certificates(self, files: dict[str, bytes]) -> None:
        certs = os.path.join(self.workdir, "certs")
        for name, data in files.items():
            path = os.path.join(certs, name)
            if os.path.exists(path):
                continue
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)

    def _usable(self, cert: Certificate) -> bool:
        """Whether ``cert`` loads (PEM certificate and matching key); a bad Secret must not
        make nginx refuse the whole configuration."""
        name = certificate_file(cert)
        if name not in self._checked:
            self._write_certificates({name + ".crt": cert.cert, name + ".key": cert.key})
            base = os.path.join(self.workdir, "certs", name)
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(base + ".crt", base + ".key")
                self._checked[name] = True
            except (ssl.SSLError, OSError, ValueError) as e:
                self._checked[name] = False
                if self.on_error is not None:
                    self.on_error(f"certificate {cert.secret}", e)
        return self._checked[name]

    async def apply(self, table: Table) -> bool:
        """Move nginx to ``table``; True when it reloaded."""
        usable = {h: c for h, c in table.certificates.items() if self._usable(c)}
        if len(usable) != len(table.certificates):
            table = msgspec.structs.replace(table, certificates=usable)
        text = render(table, self.listen, self.workdir, worker_processes=self.worker_processes)
        if text == self.rendered:
            return False
        self._write_certificates(certificates(table))
        previous = self.rendered
        with open(self.conf, "w") as f:
            f.write(text)
        try:
            await self._check()
        except ValueError as e:
            with open(self.conf, "w") as f:
                f.write(previous)
            if self.on_error is not None:
                self.on_error("nginx configuration refused", e)
            return False
        self.rendered = text
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGHUP)
            self.reloads += 1
        return True

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish their requests
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(OSError):
            self._dir.cleanup()
