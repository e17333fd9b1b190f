"""The apiserver service: the Kubernetes HTTP API over HTTPS on 127.0.0.1:6443 (option
``apiserver_port``; ``apiserver_host``), with the certificate and bearer token kyb.pki keeps in
the data directory (option ``data_dir``, default ~/.local/share/kybernetes). See README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from pathlib import Path

from aiohttp import web

from kyb import pki, satoken
from kyb.customkinds import CustomKinds
from kyb.serve import ServiceContext
from services.apiserver.routes import Server

DEFAULT_DATA_DIR = "~/.local/share/kybernetes"


def ssl_context(files: pki.ApiserverFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files.cert), str(files.key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    host = str(ctx.options.get("apiserver_host") or "127.0.0.1")
    port = int(ctx.options.get("apiserver_port") or pki.DEFAULT_PORT)
    data_dir = Path(str(ctx.options.get("data_dir") or os.environ.get("KYB_DATA_DIR") or DEFAULT_DATA_DIR)).expanduser()
    files = pki.ensure(data_dir, port)
    server = Server(ctx.nc, files.token(), server_address=f"{host}:{port}",
                    bookmark_seconds=float(ctx.options.get("apiserver_bookmark_seconds", 60)),
                    service_account_key=satoken.load_key(files.sa_key).public_key())
    kinds = CustomKinds(ctx.store, ctx.nc, on_change=server.kinds_changed)
    await kinds.start()
    server.kinds = kinds
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context(files), reuse_address=True)
    try:
        await site.start()
        ctx.log.info("apiserver serving", url=f"https://{host}:{port}", kubeconfig=str(files.kubeconfig))
        await stop.wait()
    finally:
        server.stopping.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner.cleanup(), 5)
        await server.cache.stop()
        await kinds.stop()
