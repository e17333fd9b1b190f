"""Running the cluster itself: `kyb up` (nats-server with JetStream and every service in one
process) and `kyb serve NAME` (one service alone, as compose and systemd run them)."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click

from kyb import errors
from kyb.cli.base import fail

# -- up, serve -------------------------------------------------------------------------------

def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        # As the server will: connections of a previous run lingering in TIME_WAIT do not
        # make the port taken, only a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _run_until_signal(names: list[str], url: str, options: dict[str, Any]) -> None:
    from kyb.serve import run_services

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_services(names, url, options, stop)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("~/.local/share/kybernetes").expanduser(), show_default=True)
@click.option("--nats-port", type=int, default=4222, show_default=True)
@click.option("--node-name", default=None, help="name of this machine's node (default: host name)")
@click.option("--runtime", type=click.Choice(["docker", "process"]), default=None,
              help="container runtime of this machine's kubelet (default: docker when an engine answers)")
@click.option("--nodes", type=click.IntRange(1, 155), default=1, show_default=True,
              help="kubelets to run on this machine (node-1..node-N, each with its own pod range)")
@click.option("--metrics-port", type=int, default=None,
              help="serve Prometheus metrics of all services on 127.0.0.1:PORT/metrics (default: off)")
@click.option("--apiserver-port", type=int, default=6443, show_default=True,
              help="port of the Kubernetes API on 127.0.0.1 (kubeconfig: <data-dir>/kubeconfig.yaml)")
@click.option("--disable", "disable", multiple=True, metavar="NAME[,NAME]",
              help="do not create these defaults on first start: local-path (StorageClass), ingressclass")
@click.option("-o", "--option", "service_options", multiple=True, metavar="KEY=VALUE",
              help="a service option, as `kyb serve NAME --KEY VALUE` takes it (e.g. ingress_http_port=8080)")
@click.option("--network", type=click.Choice(["cni", "loopback"]), default=None,
              help="pod network: cni (bridge, 10.244/16 pods, nftables Services on 10.96/12; needs root, "
                   "nft and the CNI plugins) or loopback (127.x pods); default: cni where it can run")
def up(data_dir: Path, nats_port: int, node_name: str | None, runtime: str | None, nodes: int,
       metrics_port: int | None, apiserver_port: int, disable: tuple[str, ...],
       service_options: tuple[str, ...], network: str | None) -> None:
    """Run a whole cluster on this machine: NATS with JetStream, then every service."""
    from kyb import clusterdefaults
    from kyb.natsd import NatsServer
    from kyb.serve import SERVICES, available_services

    try:
        disabled = clusterdefaults.parse_disable(disable)
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("--disable: "), param_hint="--disable") from None
    data_dir = data_dir.expanduser()
    from kyb.natsd import stop_orphan

    # A nats-server left on this data directory by a `kyb up` that was killed (kill -9, the
    # OOM killer): stop it, then start afresh on the same store.
    orphan = stop_orphan(NatsServer(store_dir=data_dir / "jetstream").pid_file, data_dir / "jetstream")
    if orphan is not None:
        click.echo(f"stopped nats-server {orphan}, left running on {data_dir} by an earlier kyb up", err=True)
    from kyb.cli import netmode

    try:
        network, notice = netmode.choose(network)
    except ValueError as e:
        fail(f"error: {e}")
    if notice:
        click.echo(notice, err=True)
    if not _port_free("127.0.0.1", nats_port):
        fail(f"error: port {nats_port} on 127.0.0.1 is already in use; choose another with --nats-port")
    data_dir.mkdir(parents=True, exist_ok=True)
    from kyb import auth, secretbox

    node = node_name or socket.gethostname().lower()
    from kyb.cli.multinode import node_name as nth_node

    node_names = [node] if nodes == 1 else [nth_node(i) for i in range(1, nodes + 1)]
    layout = auth.generate(data_dir / "auth", list(SERVICES), nodes=node_names)
    key_file = secretbox.generate_key_file(data_dir / "secret.key")
    from kyb import pki

    kube = pki.ensure(data_dir, apiserver_port)
    server = NatsServer(store_dir=data_dir / "jetstream", port=nats_port, log_file=data_dir / "nats.log",
                        config_file=layout.server_config)
    try:
        server.start()
    except (RuntimeError, TimeoutError, FileNotFoundError) as e:
        fail(f"error: cannot start nats-server: {e} (log: {data_dir / 'nats.log'})")
    names = [n for n in SERVICES if n in set(available_services())]
    options: dict[str, Any] = {"data_dir": str(data_dir), "auth_dir": str(layout.dir),
                               "secret_key_file": str(key_file), "node_name": node,
                               "cluster_defaults_file": str(data_dir / "defaults.json"),
                               "disable_defaults": sorted(disabled), "apiserver_port": apiserver_port,
                               "node_names": node_names}  # the nodes whose pods share this namespace (netpol)
    if network == "cni":
        options.update(netmode.cni_options(data_dir))
    for item in service_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"error: --option takes KEY=VALUE, not {item!r}")
        options[key.replace("-", "_")] = value
    if runtime:
        options["runtime"] = runtime
    if nodes > 1:
        from kyb.cli.multinode import kubelet_instances

        options["instances"] = {"kubelet": kubelet_instances(nodes, data_dir, network)}
    if metrics_port is not None:
        options["metrics_port"] = metrics_port
    click.echo(f"kybernetes is up: NATS at {server.url} (data in {data_dir})")
    click.echo(f"credentials: export KYB_NATS_CREDS={layout.creds['admin']}")
    click.echo(f"Kubernetes API at https://127.0.0.1:{apiserver_port}: export KUBECONFIG={kube.kubeconfig}")
    try:
        _run_until_signal(names, server.url, options)
    except errors.KybError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def extra_options(args: list[str]) -> dict[str, Any]:
    """``--key value``, ``--key=value`` and bare ``--flag`` -> {"key": value | True}; dashes become
    underscores."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise click.UsageError(f"unexpected argument {arg!r}; extra options are --key value")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            out[key.replace("-", "_")] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[key.replace("-", "_")] = args[i + 1]
            i += 1
        else:
            out[key.replace("-", "_")] = True
        i += 1
    return out


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name")
@click.option("--nats", "nats_url", default=None, help="NATS URL (default: the global --nats)")
@click.option("--node-name", default=None, help="kubelet: the node this process runs")
@click.option("--runtime", type=click.Choice(["docker", "process"]), default=None, help="kubelet: container runtime")
@click.option("--metrics-port", type=int, default=None, help="serve Prometheus metrics on 127.0.0.1:PORT/metrics")
@click.pass_context
def serve(ctx: click.Context, name: str, nats_url: str | None, node_name: str | None, runtime: str | None,
          metrics_port: int | None) -> None:
    """Run one service alone (what compose and systemd units start)."""
    from kyb.serve import SERVICES

    if name not in SERVICES:
        fail(f"error: unknown service {name!r}; known: {', '.join(SERVICES)}")
    options = extra_options(list(ctx.args))
    if node_name:
        options["node_name"] = node_name
    if runtime:
        options["runtime"] = runtime
    if metrics_port is not None:
        options["metrics_port"] = metrics_port
    url = nats_url or ctx.obj["nats"]
    try:
        _run_until_signal([name], url, options)
    except errors.KybError as e:
        fail(f"error: {e}")
    except KeyboardInterrupt:
        pass
