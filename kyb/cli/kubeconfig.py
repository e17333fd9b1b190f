"""``kyb kubeconfig``: print the kubeconfig `kyb up` wrote for kubectl and every Kubernetes
client (like k3s' k3s.yaml), from ``<data-dir>/kubeconfig.yaml``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from kyb.pki import ApiserverFiles


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="kyb up's data directory (default: $KYB_DATA_DIR or ~/.local/share/kybernetes)")
def kubeconfig_cmd(data_dir: Path | None) -> None:
    """Print the kubeconfig of this machine's cluster (export KUBECONFIG=<data-dir>/kubeconfig.yaml)."""
    base = data_dir or Path(os.environ.get("KYB_DATA_DIR") or "~/.local/share/kybernetes")
    path = ApiserverFiles.under(base.expanduser()).kubeconfig
    try:
        click.echo(path.read_text(), nl=False)
    except OSError as e:
        raise click.ClickException(f"cannot read {path}: {e.strerror or e}; kyb up writes it") from None
