"""The `kyb` command: the group, its global options and the list of commands. Every command
lives in a module of its verb family (kyb/cli/objects.py: apply, get, describe, delete, edit,
events; cluster.py: up, serve; rollout.py, nodes.py, podio.py, ...); what they share (the
runner, the shared options, kind arguments and exit codes) is kyb/cli/base.py. No command
module imports this one (an import-linter contract keeps it so), and a command that fails to
import fails the command line loudly.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from kyb.cli import (
    autoscale,
    cluster,
    create,
    hollow,
    kubeconfig,
    label,
    nodes,
    objects,
    podio,
    rollout,
    scale,
    top,
    trace,
)
from kyb.cli.base import DEFAULT_NATS, fail
from kyb.cli.cluster import extra_options  # noqa: F401  (part of this module's interface for tests)


class KybGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            if type(e) is click.ClickException:  # our own one-line errors: kubectl's shape
                click.echo(f"error: {e.message}", err=True)
                sys.exit(1)
            raise


@click.group(cls=KybGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--nats", "nats_url", envvar="KYB_NATS_URL", default=DEFAULT_NATS, show_default=True,
              help="NATS URL of the cluster")
@click.option("--creds", envvar="KYB_NATS_CREDS", default=None, help="NATS credentials file (kyb up: <data-dir>/auth/admin.creds)")
@click.option("--user", envvar="KYB_NATS_USER", default=None, help="NATS user")
@click.option("--password", envvar="KYB_NATS_PASSWORD", default=None, help="NATS password")
@click.option("--tls-ca", envvar="KYB_NATS_TLS_CA", default=None, help="CA file to verify the NATS server with")
@click.option("--tls-cert", envvar="KYB_NATS_TLS_CERT", default=None, help="client certificate file for NATS")
@click.option("--tls-key", envvar="KYB_NATS_TLS_KEY", default=None, help="client key file for NATS")
@click.pass_context
def cli(ctx: click.Context, nats_url: str, creds: str | None, user: str | None, password: str | None,
        tls_ca: str | None, tls_cert: str | None, tls_key: str | None) -> None:
    """kyb controls a kybernetes cluster."""
    from kyb import auth

    tls = {"tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key}
    if ctx.invoked_subcommand == "up":
        # kyb up is the server side: it writes credentials, it never reads a client's
        # (KYB_NATS_CREDS may point at the file it is about to write).
        auth.set_default(auth.ClientAuth(**tls))
        ctx.obj = {"nats": nats_url}
        return
    try:
        identity = (auth.ClientAuth.from_creds(creds, **tls) if creds
                    else auth.ClientAuth(user=user, password=password, source="--user" if user else None, **tls))
        local = auth.default_admin_creds()
        if not creds and not user and local is not None and ctx.invoked_subcommand not in ("up", "serve"):
            # Like kubectl's ~/.kube/config: the admin credentials `kyb up` wrote in its data
            # directory ($KYB_DATA_DIR, default ~/.local/share/kybernetes) serve when none are named.
            identity = auth.ClientAuth.from_creds(local, **tls)
    except (OSError, ValueError) as e:
        fail(f"error: cannot read credentials: {e}")
    auth.set_default(identity)  # every connection of this command, `kyb serve` included
    ctx.obj = {"nats": nats_url}
    # Commands with their own --nats option follow the global one.
    ctx.default_map = {name: {"nats_url": nats_url} for name in ("logs", "exec")} | {
        "top": {"pods": {"nats_url": nats_url}, "nodes": {"nats_url": nats_url}}
    }


COMMANDS: list[tuple[click.Command, str | None]] = [
    (objects.apply, None),
    (objects.get, None),
    (objects.describe, None),
    (objects.delete, None),
    (objects.edit, None),
    (objects.events, None),
    (objects.api_resources, "api-resources"),
    (objects.version, None),
    (create.create_group, "create"),
    (label.label_cmd, "label"),
    (label.annotate_cmd, "annotate"),
    (scale.scale_cmd, "scale"),
    (autoscale.autoscale_cmd, "autoscale"),
    (rollout.rollout_group, "rollout"),
    (rollout.set_group, "set"),
    (podio.logs_command, "logs"),
    (podio.exec_command_cli, "exec"),
    (top.top_group, "top"),
    *((command, None) for command in nodes.COMMANDS),
    (trace.trace_cmd, "trace"),
    (hollow.hollow_nodes_cmd, None),
    (kubeconfig.kubeconfig_cmd, "kubeconfig"),
    (cluster.up, None),
    (cluster.serve, None),
]
for _command, _name in COMMANDS:
    cli.add_command(_command, _name)


def main() -> None:
    cli(prog_name="kyb")


if __name__ == "__main__":
    main()
