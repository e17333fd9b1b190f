"""kubectl's everyday verbs on objects: apply, get, describe, delete, edit, events,
api-resources and version, over the api request protocol (kyb.client.ApiClient)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import yaml

from kyb import errors
from kyb.cli import describe as describe_mod
from kyb.cli import manifests, output, printers
from kyb.cli.base import (
    Failed,
    fail,
    kind_ref,
    load_custom_kinds,
    namespace_opt,
    namespace_scope,
    not_found,
    obj_ref,
    parse_targets,
    resolve_kind,
    run_api,
    server_error,
    utcnow,
)
from kyb.cli.params import Duration
from kyb.client import ApiClient, connect
from schemas import limits

# -- apply -----------------------------------------------------------------------------------

@click.command()
@click.option("-f", "--filename", "filenames", multiple=True, required=True,
              help="file, directory or - for stdin")
@click.option("-R", "--recursive", is_flag=True, help="process directories recursively")
@namespace_opt
@click.pass_obj
def apply(obj: dict[str, Any], filenames: tuple[str, ...], recursive: bool, namespace: str) -> None:
    """Create or update objects from manifests."""
    items = list(manifests.load(list(filenames), recursive=recursive, stdin=sys.stdin))

    async def go(api: ApiClient) -> None:
        failed = False
        for item in items:
            if isinstance(item, manifests.ManifestError):
                click.echo(f"error: {item.message}", err=True)
                failed = True
                continue
            try:
                stored, result = await api.apply(item.body, namespace)
            except errors.Unreachable:
                raise
            except errors.Temporary as e:
                raise errors.Temporary(e.message) from e
            except errors.KybError as e:
                click.echo(_apply_error(item, e), err=True)
                failed = True
                continue
            click.echo(f"{obj_ref(stored)} {result}")
        if failed:
            raise Failed

    if not items:
        fail("error: no objects passed to apply")
    if not any(isinstance(i, manifests.Document) for i in items):
        for item in items:  # nothing to send: report without contacting the cluster
            click.echo(f"error: {item.message}", err=True)  # type: ignore[union-attr]
        sys.exit(1)
    run_api(go, obj["nats"])


def _apply_error(item: manifests.Document, e: errors.KybError) -> str:
    lines = [f'error: error when applying "{item.source}": {e.message}']
    lines += [f"* {d.field}: {d.message}" for d in e.details if f"{d.field}: {d.message}" not in e.message]
    return "\n".join(lines)




# -- get -------------------------------------------------------------------------------------

@click.command()
@click.argument("args", nargs=-1)
@namespace_opt
@click.option("-A", "--all-namespaces", is_flag=True, help="list across all namespaces")
@click.option("-o", "--output", "fmt", type=click.Choice(["yaml", "json", "wide", "name"]), default=None)
@click.option("-l", "--selector", default=None, help="label selector, e.g. app=web,tier!=db")
@click.option("--field-selector", default=None, help="field selector, e.g. spec.nodeName=n1")
@click.option("-w", "--watch", is_flag=True, help="after listing, stream changes")
@click.option("--no-headers", is_flag=True, help="tables without their header line")
@click.option("--show-labels", is_flag=True, help="a last column with each object's labels")
@click.pass_obj
def get(obj: dict[str, Any], args: tuple[str, ...], namespace: str, all_namespaces: bool, fmt: str | None,
        selector: str | None, field_selector: str | None, watch: bool, no_headers: bool, show_labels: bool) -> None:
    """Show objects: a table, or YAML/JSON with -o."""
    targets = parse_targets(args)

    async def go(api: ApiClient) -> None:
        sections: list[str] = []
        found: list[tuple[Any, list[dict[str, Any]]]] = []
        failed = False
        watcher = None
        if watch:  # watch first, list second: nothing changed in between goes unseen
            from kyb.cli.streams import KindWatch

            info0 = targets[0][0]
            watcher = KindWatch(api.nc, info0, namespace_scope(info0, namespace, all_namespaces))
            await watcher.start()
        for info, names in targets:
            ns = namespace_scope(info, namespace, all_namespaces)
            if names:
                objs = []
                for name in names:
                    try:
                        objs.append(await api.get(info.plural, namespace if info.namespaced else None, name))
                    except errors.NotFound:
                        click.echo(server_error(not_found(info, name)), err=True)
                        failed = True
            else:
                objs = await api.list(info.plural, ns, selector, field_selector)
            found.append((info, objs))
        listed = {(m.get("namespace"), m.get("name")): _revision(m)
                  for _, objs in found for m in (o.get("metadata") or {} for o in objs)}
        if fmt in ("yaml", "json"):
            items = [o for _, objs in found for o in objs]
            single = len(items) == 1 and len(targets) == 1 and len(targets[0][1]) == 1
            doc = items[0] if single else output.as_list(items)
            if items or not failed:
                click.echo(output.to_yaml(doc) if fmt == "yaml" else output.to_json(doc), nl=False)
        elif fmt == "name":
            for info, objs in found:
                for o in objs:
                    click.echo(f"{kind_ref(info)}/{o['metadata']['name']}")
        else:
            now = utcnow()
            for info, objs in found:
                if not objs:
                    continue
                head, rows = printers.table(info.kind, objs, now, wide=fmt == "wide",
                                            all_namespaces=all_namespaces and info.namespaced, show_labels=show_labels)
                if len(found) > 1:
                    rows = [[f"{kind_ref(info)}/{r[0]}", *r[1:]] if not all_namespaces else r for r in rows]
                sections.append(output.render_table(head, rows, header=not no_headers))
            if sections:
                click.echo("\n".join(sections), nl=False)
            elif not failed and not watch:
                where = "" if all_namespaces else f" in {namespace} namespace"
                if all(not info.namespaced for info, _ in found):
                    where = ""
                click.echo(f"No resources found{where}.", err=True)
        if watcher is not None:
            info0 = targets[0][0]
            head, rows = printers.table(info0.kind, found[0][1], utcnow(), wide=fmt == "wide",
                                        all_namespaces=all_namespaces and info0.namespaced, show_labels=show_labels)
            if not found[0][1] and fmt not in ("yaml", "json", "name"):
                click.echo(output.render_table(head, []), nl=False)
            await _watch(watcher, info0, fmt, set(targets[0][1]), all_namespaces, listed,
                         output.column_widths(head, rows), show_labels)
        if failed:
            raise Failed

    run_api(go, obj["nats"])


async def _watch(watcher: Any, info: Any, fmt: str | None, names: set[str], all_namespaces: bool,
                 listed: dict[tuple[Any, Any], int], widths: list[int], show_labels: bool = False) -> None:
    async for event, o in watcher.events():
        meta = o.get("metadata") or {}
        name = meta.get("name", "")
        if names and name not in names:
            continue
        shown = listed.get((meta.get("namespace"), name), 0)
        if event != "DELETED" and _revision(meta) <= shown:
            continue  # the listing already showed this or a later version
        if fmt in ("yaml", "json"):
            click.echo(("---\n" + output.to_yaml(o)) if fmt == "yaml" else output.to_json(o), nl=False)
        elif fmt == "name":
            click.echo(f"{kind_ref(info)}/{name}")
        else:
            head, rows = printers.table(info.kind, [o], utcnow(), wide=fmt == "wide",
                                        all_namespaces=all_namespaces and info.namespaced, show_labels=show_labels)
            line = output.render_table(head, rows, header=False, min_widths=widths).rstrip("\n")
            click.echo(line + ("   (deleted)" if event == "DELETED" else ""))


def _revision(meta: dict[str, Any]) -> int:
    try:
        return int(meta.get("resourceVersion") or 0)
    except ValueError:
        return 0


# -- describe --------------------------------------------------------------------------------

@click.command()
@click.argument("args", nargs=-1, required=True)
@namespace_opt
@click.pass_obj
def describe(obj: dict[str, Any], args: tuple[str, ...], namespace: str) -> None:
    """Show an object in detail, with its recent events."""
    from kyb.cli.streams import events_filter, read_events

    targets = parse_targets(args)

    async def go(api: ApiClient) -> None:
        texts = []
        for info, names in targets:
            ns = namespace_scope(info, namespace)
            objs = ([await _get_or_not_found(api, info, ns, n) for n in names] if names
                    else await api.list(info.plural, ns))
            for o in objs:
                meta = o.get("metadata") or {}
                events = await read_events(api.nc, events_filter(meta.get("namespace"), o.get("kind"), meta["name"]))
                texts.append(describe_mod.describe(o, events, utcnow()))
        if not texts:
            click.echo(f"No resources found in {namespace} namespace.", err=True)
        click.echo("\n\n".join(texts), nl=False)

    run_api(go, obj["nats"])


async def _get_or_not_found(api: ApiClient, info: Any, ns: str | None, name: str) -> dict[str, Any]:
    try:
        return await api.get(info.plural, ns, name)
    except errors.NotFound:
        raise not_found(info, name) from None


# -- delete ----------------------------------------------------------------------------------

@click.command()
@click.argument("args", nargs=-1)
@click.option("-f", "--filename", "filenames", multiple=True, help="delete what these manifests name")
@click.option("-R", "--recursive", is_flag=True)
@namespace_opt
@click.option("-l", "--selector", default=None, help="delete the objects matching this label selector")
@click.option("--all", "delete_all", is_flag=True, help="delete every object of the kind in the namespace")
@click.option("--cascade", type=click.Choice(["background", "foreground", "orphan"], case_sensitive=False),
              default="background", show_default=True)
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="wait until the objects are gone")
@click.option("--timeout", type=Duration(), default="60s", show_default=True,
              help="how long to wait with --wait: seconds or a duration (90s, 5m)")
@click.option("--grace-period", type=int, default=-1, show_default=True,
              help="seconds a pod gets to stop (-1: its own terminationGracePeriodSeconds; 0 needs --force)")
@click.option("--now", is_flag=True, help="stop pods at once: --grace-period=1")
@click.option("--force", is_flag=True,
              help="with --grace-period=0 (the default with --force): remove at once, not waiting for the kubelet")
@click.pass_obj
def delete(obj: dict[str, Any], args: tuple[str, ...], filenames: tuple[str, ...], recursive: bool,
           namespace: str, selector: str | None, delete_all: bool, cascade: str, wait: bool,
           timeout: float, grace_period: int, now: bool, force: bool) -> None:
    """Delete objects by name, by label selector, by manifest, or all of a kind."""
    if now:
        if grace_period != -1:
            raise click.UsageError("--now and --grace-period cannot be specified together")
        grace_period = 1
    if grace_period == 0 and not force:
        grace_period = 1  # as kubectl: an immediate deletion must be asked for with --force
    if force and grace_period < 0:
        grace_period = 0
    if force and grace_period == 0:
        click.echo("Warning: Immediate deletion does not wait for confirmation that the running resource has been "
                   "terminated. The resource may continue to run on the cluster indefinitely.", err=True)
    grace = None if grace_period < 0 else grace_period
    propagation = cascade.capitalize()
    plan: list[tuple[Any, str | None, str]] = []
    by_query: list[Any] = []
    if filenames:
        for item in manifests.load(list(filenames), recursive=recursive, stdin=sys.stdin):
            if isinstance(item, manifests.ManifestError):
                fail(f"error: {item.message}")
                return
            info = resolve_kind(str(item.body.get("kind", "")))
            meta = item.body.get("metadata") or {}
            plan.append((info, namespace_scope(info, meta.get("namespace") or namespace), meta.get("name", "")))
    else:
        targets = parse_targets(args)
        for info, names in targets:
            if names:
                plan += [(info, namespace_scope(info, namespace), n) for n in names]
            elif selector or delete_all:
                by_query.append(info)
            else:
                raise click.UsageError(f"resource(s) were provided, but no name was specified "
                                       f"(use --all or -l to delete {info.plural} by query)")

    async def go(api: ApiClient) -> None:
        work = list(plan)
        for info in by_query:
            ns = namespace_scope(info, namespace)
            for o in await api.list(info.plural, ns, selector):
                work.append((info, ns, o["metadata"]["name"]))
        if not work and by_query:
            click.echo(f"No resources found in {namespace} namespace.", err=True)
        failed = False
        deleted: list[tuple[Any, str | None, str]] = []
        for info, ns, name in work:
            try:
                await api.delete(info.plural, ns, name, propagation, grace_period_seconds=grace)  # type: ignore[arg-type]
            except errors.NotFound:
                click.echo(server_error(not_found(info, name)), err=True)
                failed = True
                continue
            click.echo(f'{kind_ref(info)} "{name}" {"force deleted" if grace == 0 else "deleted"}')
            deleted.append((info, ns, name))
        if wait and deleted:
            await _wait_gone(api, deleted, timeout)
        if failed:
            raise Failed

    run_api(go, obj["nats"])


async def _wait_gone(api: ApiClient, objs: list[tuple[Any, str | None, str]], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = list(objs)
    delay = 0.05
    while pending:
        still = []
        for info, ns, name in pending:
            try:
                await api.get(info.plural, ns, name)
                still.append((info, ns, name))
            except errors.NotFound:
                pass
        pending = still
        if not pending:
            return
        if loop.time() > deadline:
            names = ", ".join(f'{kind_ref(i)} "{n}"' for i, _, n in pending)
            click.echo(f"error: timed out waiting for the deletion of {names}", err=True)
            raise Failed
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


# -- edit ------------------------------------------------------------------------------------

EDIT_HEADER = """\
# Please edit the object below. Lines beginning with a '#' will be ignored,
# and an empty file will abort the edit. If an error occurs while saving this file will be
# reopened with the relevant failures.
#
"""


@click.command()
@click.argument("args", nargs=-1, required=True)
@namespace_opt
@click.pass_obj
def edit(obj: dict[str, Any], args: tuple[str, ...], namespace: str) -> None:
    """Edit an object in $EDITOR and replace it (refused if it changed meanwhile)."""
    targets = parse_targets(args)
    if len(targets) != 1 or len(targets[0][1]) != 1:
        raise click.UsageError("edit takes exactly one object: KIND NAME or KIND/NAME")
    info, (name,) = targets[0]
    ns = namespace_scope(info, namespace)

    async def go(api: ApiClient) -> None:
        current = await _get_or_not_found(api, info, ns, name)
        original = EDIT_HEADER + output.to_yaml(current)
        fd, path = tempfile.mkstemp(prefix=f"kyb-edit-{name}-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(original)
        editor = os.environ.get("KYB_EDITOR") or os.environ.get("EDITOR") or "vi"
        proc = await asyncio.create_subprocess_exec(*shlex.split(editor), path)
        if await proc.wait() != 0:
            click.echo(f"error: the editor {editor!r} exited with {proc.returncode}; "
                       f"your edits are kept in {path}", err=True)
            raise Failed
        edited_text = Path(path).read_text()
        try:
            edited = limits.load_one_yaml(edited_text, path)
        except yaml.YAMLError as e:
            click.echo(f"error: {_yaml_problem(e, path)}", err=True)
            click.echo(f'A copy of your changes has been stored to "{path}"', err=True)
            raise Failed from None
        if edited is None:
            os.unlink(path)
            click.echo("Edit cancelled, saved file was empty.")
            return
        if edited == current:
            os.unlink(path)
            click.echo("Edit cancelled, no changes made.")
            return
        if not isinstance(edited, dict):
            click.echo(f"error: {path}: the edited object is not a mapping", err=True)
            click.echo(f'A copy of your changes has been stored to "{path}"', err=True)
            raise Failed
        meta = edited.setdefault("metadata", {})
        meta["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
        try:
            stored = await api.replace(edited, ns)
        except (errors.Temporary, errors.Unreachable):
            click.echo(f'A copy of your changes has been stored to "{path}"', err=True)
            raise
        except errors.KybError as e:
            click.echo(f"error: {kind_ref(info)} \"{name}\" could not be saved: {server_error(e)}", err=True)
            click.echo(f'A copy of your changes has been stored to "{path}"', err=True)
            raise Failed from None
        os.unlink(path)
        click.echo(f"{obj_ref(stored)} edited")

    run_api(go, obj["nats"])


def _yaml_problem(e: yaml.YAMLError, source: str) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"error parsing {source}: line {mark.line + 1}: {problem}" if mark else f"error parsing {source}: {problem}"


# -- api-resources, version, events ---------------------------------------------------------

@click.command("api-resources")
@namespace_opt
def api_resources(namespace: str) -> None:
    """The kinds this cluster serves."""
    from schemas.registry import all_kinds

    nats_url = (click.get_current_context().find_root().obj or {}).get("nats")
    if nats_url:
        with contextlib.suppress(errors.KybError, OSError):
            load_custom_kinds(nats_url)  # the kinds the cluster's CRDs make
    rows = [[k.plural, ",".join(k.short_names), k.api_version, "true" if k.namespaced else "false", k.kind]
            for k in all_kinds()]
    click.echo(output.render_table(["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], rows), nl=False)


def _client_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kybernetes")
    except PackageNotFoundError:
        return "unknown"


@click.command()
@namespace_opt
@click.pass_obj
def version(obj: dict[str, Any], namespace: str) -> None:
    """Client version and, when reachable, the cluster's."""
    click.echo(f"Client Version: {_client_version()}")

    async def cluster() -> str:
        nc = await connect(obj["nats"])
        try:
            v = nc.connected_server_version
            server = f"v{v.major}.{v.minor}.{v.patch}"
            api = "answering"
            try:
                await ApiClient(nc, timeout=2.0).list("namespaces")
            except errors.Temporary:
                api = "not answering"
            except errors.KybError:
                pass
            return f"Server: NATS {server} at {obj['nats']} (api service {api})"
        finally:
            await nc.close()

    try:
        click.echo(asyncio.run(cluster()))
    except errors.Unreachable as e:
        click.echo(f"Server: {e.message}")


@click.command()
@namespace_opt
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("--for", "for_obj", default=None, help="only the events of KIND/NAME")
@click.option("-w", "--watch", is_flag=True, help="stream new events")
@click.pass_obj
def events(obj: dict[str, Any], namespace: str, all_namespaces: bool, for_obj: str | None, watch: bool) -> None:
    """Events of a namespace, of all, or of one object."""
    from kyb.cli.streams import events_filter, follow_events, read_events

    ns = None if all_namespaces else namespace
    if for_obj:
        if "/" not in for_obj:
            raise click.UsageError("--for takes KIND/NAME")
        kind, name = for_obj.split("/", 1)
        info = resolve_kind(kind)
        subject = events_filter(ns or namespace if info.namespaced else None, info.kind, name)
    else:
        subject = events_filter(ns)

    async def go(api: ApiClient) -> None:
        now = utcnow()
        if watch:
            head, _ = printers.table("Event", [], now, all_namespaces=all_namespaces)
            click.echo(output.render_table(head, []), nl=False)
            async for ev in follow_events(api.nc, subject):
                _, rows = printers.table("Event", [ev], utcnow(), all_namespaces=all_namespaces)
                click.echo(output.render_table(head, rows, header=False), nl=False)
            return
        evs = await read_events(api.nc, subject, limit=1000)
        if not evs:
            where = "" if all_namespaces else f" in {namespace} namespace"
            click.echo(f"No events found{where}.", err=True)
            return
        head, rows = printers.table("Event", evs, now, all_namespaces=all_namespaces)
        click.echo(output.render_table(head, rows), nl=False)

    run_api(go, obj["nats"])
