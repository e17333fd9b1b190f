"""Any NATS client drives the api with the credentials `kyb up` writes, as the README shows:
nats-py and nats.js with their default options apply a manifest through ``kyb.api.apply`` and
get the reply, and another user cannot read that reply. Credentials are read the client's way
only: `kyb up` ignores KYB_NATS_CREDS, and refused or missing credentials are one clear line."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nats
import pytest

pytestmark = pytest.mark.timeout(180)
CLIENTS = Path(__file__).parent / "clients"
MANIFEST = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-%s}\ndata: {k: v}\n"


def test_raw_nats_py_with_default_options_gets_the_reply(up_factory) -> None:
    up = up_factory()
    user, password = up.creds("admin")

    async def main() -> tuple[str, str, list[Exception]]:
        # The README's example: nothing but the server, the user and the password.
        nc = await nats.connect(up.url, user=user, password=password)
        # Another component's credentials: it may subscribe only under its own inbox prefix.
        spy_errors: list[Exception] = []

        async def on_error(e: Exception) -> None:
            spy_errors.append(e)

        spy_user, spy_password = up.creds("scheduler")
        spy = await nats.connect(up.url, user=spy_user, password=spy_password, error_cb=on_error)
        overheard = await spy.subscribe("_INBOX.>")
        await spy.flush()
        try:
            reply = await nc.request("kyb.api.apply", MANIFEST % b"nats-py", timeout=5)
            first = reply.headers["Kyb-Status"], reply.headers["Kyb-Result"]
            again = await nc.request("kyb.api.apply", MANIFEST % b"nats-py", timeout=5)
            assert again.headers.get("Kyb-Result") == "unchanged", (again.headers, again.data)
            await spy.flush()
            with pytest.raises(nats.errors.TimeoutError):
                await overheard.next_msg(timeout=0.5)
        finally:
            await nc.close()
            await spy.close()
        return *first, spy_errors

    status, result, spy_errors = asyncio.run(main())
    assert (status, result) == ("201", "created")
    assert any("permissions violation" in str(e).lower() for e in spy_errors), spy_errors
    assert up.get("configmap", "from-nats-py")["data"] == {"k": "v"}


def test_nats_js_with_default_options_gets_the_reply(up_factory) -> None:
    node = shutil.which("node")
    if node is None or not (CLIENTS / "node_modules" / "nats").is_dir():
        why = "nats.js is not installed (npm ci --prefix tests/clients; .ci/run does it)"
        if os.environ.get("KYB_REQUIRE_DOCKER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    up = up_factory()
    user, password = up.creds("admin")
    done = subprocess.run([node, str(CLIENTS / "apply.mjs"), up.url, user, password], input=MANIFEST % b"nats-js",
                          capture_output=True, timeout=30, cwd=CLIENTS)
    assert done.returncode == 0, done.stderr.decode()
    status, body = done.stdout.decode().split("\n", 1)
    assert status == "201", body
    assert up.get("configmap", "from-nats-js")["data"] == {"k": "v"}


def test_up_ignores_client_credentials_and_clients_get_clear_refusals(up_factory, tmp_path) -> None:
    env = {**os.environ, "KYB_NATS_CREDS": "/nonexistent/admin.creds"}
    up = up_factory(data=tmp_path / "new", env=env)  # starts although the file does not exist
    assert up.first.startswith("kybernetes is up")

    wrong = tmp_path / "wrong.creds"
    wrong.write_text("KYB_NATS_USER=admin\nKYB_NATS_PASSWORD=not-the-password\n")
    refused = up.kyb("--creds", str(wrong), "get", "pods")
    assert refused.returncode == 1
    line = refused.stderr.strip()
    assert line.startswith(f'error: NATS at {up.url} refused the credentials of user "admin" (from {wrong})'), line
    assert "not-the-password" not in line
    assert "auth/admin.creds" in line and "--creds" in line

    env = {k: v for k, v in os.environ.items() if not k.startswith("KYB_NATS_")}
    env["KYB_DATA_DIR"] = str(tmp_path / "nowhere")
    none = subprocess.run([sys.executable, "-m", "kyb.cli.main", "--nats", up.url, "get", "pods"],
                          capture_output=True, text=True, timeout=30, env=env)
    assert none.returncode == 1
    assert "requires credentials and none were found" in none.stderr and "authorization violation" in none.stderr
    assert str(tmp_path / "nowhere" / "auth" / "admin.creds") in none.stderr
