"""Argument handling of `kyb` through click's CliRunner: kind names, messages and exit codes
that need no cluster, and the one-line failure when NATS is not there."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from kyb.cli.main import cli, extra_options
from kyb.natsd import free_port


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def dead_url() -> str:
    return f"nats://127.0.0.1:{free_port()}"


def test_get_against_nothing_listening_exits_1_with_one_line_quickly(runner: CliRunner, dead_url: str) -> None:
    started = time.monotonic()
    result = runner.invoke(cli, ["--nats", dead_url, "get", "pods"])
    assert result.exit_code == 1
    assert result.output == f"error: cannot reach NATS at {dead_url}: connection refused\n"
    assert time.monotonic() - started < 10


def test_nats_url_comes_from_the_environment_or_after_the_command(runner: CliRunner, dead_url: str) -> None:
    from_env = runner.invoke(cli, ["get", "deploy"], env={"KYB_NATS_URL": dead_url})
    assert dead_url in from_env.output and from_env.exit_code == 1
    after = runner.invoke(cli, ["get", "deploy", "--nats", dead_url])
    assert dead_url in after.output and after.exit_code == 1


def test_unknown_kind_is_reported_as_kubectl_does(runner: CliRunner, dead_url: str) -> None:
    result = runner.invoke(cli, ["--nats", dead_url, "get", "foo"])
    assert result.exit_code == 1
    assert result.output == 'error: the server doesn\'t have a resource type "foo"\n'


@pytest.mark.parametrize("args", [
    pytest.param(["get"], id="no-kind"),
    pytest.param(["get", "pods/a", "b"], id="mixed-kind-name-forms"),
    pytest.param(["delete", "pods"], id="delete-without-names"),
    pytest.param(["get", "pods", "-o", "table"], id="unknown-output"),
    pytest.param(["edit", "pods", "a", "b"], id="edit-two-objects"),
])
def test_usage_errors_exit_nonzero_without_contacting_a_cluster(runner: CliRunner, dead_url: str, args) -> None:
    result = runner.invoke(cli, ["--nats", dead_url, *args])
    assert result.exit_code != 0
    assert "cannot reach NATS" not in result.output


def test_apply_reports_invalid_yaml_with_file_and_line(runner: CliRunner, dead_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: a: b\n")
    result = runner.invoke(cli, ["--nats", dead_url, "apply", "-f", str(bad)])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: error parsing {bad}: line 5: mapping values are not allowed")


def test_apply_of_an_empty_directory_says_so(runner: CliRunner, dead_url: str, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["--nats", dead_url, "apply", "-f", str(tmp_path)])
    assert result.exit_code == 1
    assert "no manifest files" in result.output


def test_api_resources_lists_kinds_with_short_names(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["api-resources"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["pods"] == ["pods", "po", "v1", "true", "Pod"]
    assert rows["deployments"][1:] == ["deploy", "apps/v1", "true", "Deployment"]
    assert rows["nodes"][-2:] == ["false", "Node"]


def test_version_without_a_cluster_still_prints_the_client(runner: CliRunner, dead_url: str) -> None:
    result = runner.invoke(cli, ["--nats", dead_url, "version"])
    assert result.exit_code == 0
    assert result.output.startswith("Client Version: ")
    assert f"cannot reach NATS at {dead_url}" in result.output


def test_up_refuses_a_taken_port_clearly(runner: CliRunner, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = runner.invoke(cli, ["up", "--data-dir", str(tmp_path), "--nats-port", str(port), "--network", "loopback"])
    assert result.exit_code == 1
    assert result.output == f"error: port {port} on 127.0.0.1 is already in use; choose another with --nats-port\n"


def test_serve_rejects_unknown_services(runner: CliRunner, dead_url: str) -> None:
    result = runner.invoke(cli, ["serve", "nosuch", "--nats", dead_url])
    assert result.exit_code == 1 and "unknown service 'nosuch'" in result.output


def test_serve_passes_extra_options_through() -> None:
    assert extra_options(["--heartbeat", "5", "--pod-cidr=127.9.0.0/16", "--dry-run"]) == {
        "heartbeat": "5", "pod_cidr": "127.9.0.0/16", "dry_run": True}
