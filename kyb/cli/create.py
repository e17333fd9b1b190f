"""``kyb create``: kubectl's create, through the api's create verb (an object that exists is
an AlreadyExists error, never overwritten, unlike apply).

    kyb create -f FILE|DIR|-                 every document of the manifests
    kyb create namespace NAME
    kyb create configmap NAME [--from-literal KEY=VALUE]... [--from-file [KEY=]PATH]...
    kyb create job NAME --from=cronjob/CRONJOB
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from kyb import errors
from kyb.cli import manifests
from kyb.cli.base import Failed, namespace_opt, obj_ref, run_api, server_error
from kyb.client import ApiClient
from schemas.batch import CRONJOB_INSTANTIATE_ANNOTATION


def _create(obj: dict[str, Any], bodies: list[dict[str, Any]], namespace: str) -> None:
    async def go(api: ApiClient) -> None:
        failed = False
        for body in bodies:
            try:
                stored = await api.create(body, namespace)
            except (errors.Unreachable, errors.Temporary):
                raise
            except errors.KybError as e:
                click.echo(server_error(e), err=True)
                failed = True
                continue
            click.echo(f"{obj_ref(stored)} created")
        if failed:
            raise Failed

    run_api(go, obj["nats"])


@click.group("create", invoke_without_command=True)
@click.option("-f", "--filename", "filenames", multiple=True, help="file, directory or - for stdin")
@click.option("-R", "--recursive", is_flag=True, help="process directories recursively")
@namespace_opt
@click.pass_context
def create_group(ctx: click.Context, filenames: tuple[str, ...], recursive: bool, namespace: str) -> None:
    """Create objects from manifests, or a namespace or configmap by name; never overwrites."""
    if ctx.invoked_subcommand is not None:
        if filenames:
            raise click.UsageError("-f cannot be combined with a subcommand")
        return
    if not filenames:
        raise click.UsageError("give -f FILE, or what to create: namespace NAME, configmap NAME")
    bodies = []
    for item in manifests.load(list(filenames), recursive=recursive, stdin=sys.stdin):
        if isinstance(item, manifests.ManifestError):
            click.echo(f"error: {item.message}", err=True)
            sys.exit(1)
        bodies.append(item.body)
    if not bodies:
        click.echo("error: no objects passed to create", err=True)
        sys.exit(1)
    _create(ctx.obj, bodies, namespace)


@create_group.command("namespace")
@click.argument("name")
@click.pass_obj
def create_namespace(obj: dict[str, Any], name: str) -> None:
    """Create a namespace."""
    _create(obj, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}], "default")


def configmap_data(literals: tuple[str, ...], files: tuple[str, ...]) -> dict[str, str]:
    """kubectl's --from-literal KEY=VALUE and --from-file [KEY=]PATH (a directory: one key per
    regular file in it); a key given twice is an error, as in kubectl."""
    data: dict[str, str] = {}

    def put(key: str, value: str) -> None:
        if not key:
            raise click.BadParameter("a key may not be empty")
        if key in data:
            raise click.BadParameter(f'cannot add key "{key}", another key by that name already exists')
        data[key] = value

    for lit in literals:
        key, sep, value = lit.partition("=")
        if not sep:
            raise click.BadParameter(f'invalid literal source "{lit}", expected key=value', param_hint="--from-literal")
        put(key, value)
    for spec in files:
        key, sep, path_text = spec.partition("=")
        path = Path(path_text if sep else spec)
        try:
            if path.is_dir():
                if sep:
                    raise click.BadParameter(f'cannot give a key to the directory "{path}"', param_hint="--from-file")
                for f in sorted(p for p in path.iterdir() if p.is_file()):
                    put(f.name, f.read_text())
            else:
                put(key if sep else path.name, path.read_text())
        except OSError as e:
            raise click.BadParameter(f'cannot read "{path}": {e.strerror or e}', param_hint="--from-file") from None
    return data


@create_group.command("configmap")
@click.argument("name")
@click.option("--from-literal", "literals", multiple=True, help="KEY=VALUE (repeatable)")
@click.option("--from-file", "files", multiple=True, help="[KEY=]PATH: a file, or a directory's files (repeatable)")
@namespace_opt
@click.pass_obj
def create_configmap(obj: dict[str, Any], name: str, literals: tuple[str, ...], files: tuple[str, ...],
                     namespace: str) -> None:
    """Create a configmap from literal values and files."""
    data = configmap_data(literals, files)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data}
    _create(obj, [body], namespace)


def job_from_cronjob(cj: dict[str, Any], name: str) -> dict[str, Any]:
    """kubectl's ``create job --from=cronjob/...``: the jobTemplate as a Job named ``name``,
    annotated ``cronjob.kubernetes.io/instantiate: manual`` and controlled by the CronJob."""
    meta = cj.get("metadata") or {}
    template = (cj.get("spec") or {}).get("jobTemplate") or {}
    tmeta = template.get("metadata") or {}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": name, "namespace": meta.get("namespace"), "labels": dict(tmeta.get("labels") or {}),
            "annotations": {**(tmeta.get("annotations") or {}), CRONJOB_INSTANTIATE_ANNOTATION: "manual"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": meta.get("name"),
                                 "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": dict(template.get("spec") or {}),
    }


@create_group.command("job")
@click.argument("name")
@click.option("--from", "source", required=True, help="the CronJob to instantiate: cronjob/NAME")
@namespace_opt
@click.pass_obj
def create_job(obj: dict[str, Any], name: str, source: str, namespace: str) -> None:
    """Create a job from a CronJob's jobTemplate (kubectl create job NAME --from=cronjob/NAME)."""
    kind, _, cj_name = source.partition("/")
    if kind.lower() not in ("cronjob", "cronjobs", "cj", "cronjob.batch", "cronjobs.batch") or not cj_name:
        raise click.UsageError(f"from must be of the form cronjob/NAME, not {source!r}")

    async def go(api: ApiClient) -> None:
        cj = await api.get("cronjobs", namespace, cj_name)
        stored = await api.create(job_from_cronjob(cj, name), namespace)
        click.echo(f"{obj_ref(stored)} created")

    run_api(go, obj["nats"])
