"""Shared fixtures: a real nats-server on a free port with a temporary store, a client on it,
and the Docker gate (skip without an engine, fail when KYB_REQUIRE_DOCKER=1)."""

from __future__ import annotations

import os

import pytest

from kyb.natsd import NatsServer, free_port


@pytest.fixture
def nats_server(tmp_path):
    server = NatsServer(store_dir=tmp_path / "jetstream", port=free_port(), log_file=tmp_path / "nats.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server) -> str:
    return nats_server.url


@pytest.fixture
async def nc(nats_url):
    import nats

    client = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    yield client
    await client.close()


def docker_available() -> tuple[bool, str]:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True, ""
    except Exception as e:  # any failure means: no engine here
        return False, f"no Docker engine answers ({type(e).__name__}: {e})"


@pytest.fixture(scope="session")
def docker_engine():
    ok, why = docker_available()
    if not ok:
        if os.environ.get("KYB_REQUIRE_DOCKER") == "1":
            pytest.fail(f"KYB_REQUIRE_DOCKER=1 but {why}")
        pytest.skip(why)
    import docker

    client = docker.from_env()
    yield client
    client.close()
