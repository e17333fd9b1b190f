"""The `kyb` command: kubectl's everyday verbs (apply, get, describe, delete, edit, ...) over
the api request protocol, plus `kyb up` / `kyb serve` to run the cluster itself.

Commands parse arguments, call one async function through ``_run`` (which turns errors into
kubectl's one-line messages and exit code 1), and print. Formatting lives in printers,
describe and output; reading manifests in manifests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import os
import shlex
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from kyb import errors
from kyb.cli import describe as describe_mod
from kyb.cli import manifests, output, printers
from kyb.cli.params import Duration
from kyb.client import ApiClient, connect
from schemas import limits

DEFAULT_NATS = "nats://127.0.0.1:4222"
T = TypeVar("T")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class Failed(Exception):
    """Some of the work failed; the messages were already printed."""


def _run(fn: Callable[[ApiClient], Awaitable[T]], nats_url: str, timeout: float = 5.0) -> T:
    """Connect, run ``fn`` with an ApiClient, close; errors become kubectl-style lines + exit 1."""

    provider = _start_tracing()

    async def main() -> T:
        nc = await connect(nats_url)
        try:
            return await fn(ApiClient(nc, timeout=timeout))
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    try:
        return asyncio.run(main())
    except Failed:
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except errors.Unreachable as e:
        _fail(f"error: {e.message}")
    except errors.Temporary as e:
        _fail(f"error: {e.message}")
    except errors.KybError as e:
        _fail(server_error(e))
    except LookupError as e:  # schemas.registry.UnknownKind
        _fail(f"error: {e.args[0] if e.args else e}")
    finally:
        if provider is not None:
            with contextlib.suppress(Exception):
                provider.force_flush()  # hand spans to the OTLP endpoint, if one is set
    raise AssertionError("unreachable")


def _start_tracing() -> Any:
    """The CLI starts the trace of each request (exported when OTEL_EXPORTER_OTLP_ENDPOINT is set)."""
    from kyb import telemetry

    return telemetry.init_telemetry("kyb")


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


def server_error(e: errors.KybError) -> str:
    """``Error from server (NotFound): pods "x" not found`` with one line per field detail."""
    lines = [f"Error from server ({e.reason}): {e.message}"]
    lines += [f"* {d.field}: {d.message}" for d in e.details if d.field and d.field not in e.message]
    return "\n".join(lines)


def resolve_kind(name: str) -> Any:
    from schemas.registry import resolve

    try:
        return resolve(name)
    except LookupError:
        raise click.ClickException(f'the server doesn\'t have a resource type "{name}"') from None


def _kind_ref(info: Any) -> str:
    return printers.kind_ref(info.kind, info.group)


def _not_found(info: Any, name: str) -> errors.NotFound:
    return errors.NotFound(f'{info.plural}{"." + info.group if info.group else ""} "{name}" not found')


def _namespace(info: Any, namespace: str, all_namespaces: bool = False) -> str | None:
    if not info.namespaced or all_namespaces:
        return None
    return namespace


# kubectl's "all" category: the workload kinds and Services (`kyb get all`, `kyb delete all --all`).
ALL_CATEGORY = ("pods", "replicationcontrollers", "services", "daemonsets", "deployments", "replicasets",
                "statefulsets", "horizontalpodautoscalers", "cronjobs", "jobs")


def _targets(args: tuple[str, ...]) -> list[tuple[Any, list[str]]]:
    """``KIND [NAME...]`` or ``KIND/NAME [KIND/NAME...]`` or ``KIND1,KIND2`` -> [(kind, names)];
    the kind ``all`` stands for kubectl's "all" category."""
    if not args:
        raise click.UsageError("you must specify the type of resource")
    if any("/" in a for a in args):
        out: list[tuple[Any, list[str]]] = []
        for a in args:
            if "/" not in a:
                raise click.UsageError(f"there is no need to specify a resource type as a separate argument "
                                       f"when passing arguments in resource/name form (got {a!r})")
            kind, name = a.split("/", 1)
            out.append((resolve_kind(kind), [name]))
        return out
    kinds = [resolve_kind(k) for part in args[0].split(",") if part
             for k in (ALL_CATEGORY if part == "all" else (part,))]
    names = list(args[1:])
    if len(kinds) > 1 and names:
        raise click.UsageError("names cannot be combined with several resource types")
    return [(k, names) for k in kinds]


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
        _fail(f"error: cannot read credentials: {e}")
    auth.set_default(identity)  # every connection of this command, `kyb serve` included
    ctx.obj = {"nats": nats_url}
    # Commands with their own --nats option follow the global one.
    ctx.default_map = {name: {"nats_url": nats_url} for name in ("logs", "exec")} | {
        "top": {"pods": {"nats_url": nats_url}, "nodes": {"nats_url": nats_url}}
    }




def _set_nats(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(dict)["nats"] = value


def namespace_opt(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-n/--namespace``, and ``--nats`` accepted after the command as well (as kubectl's globals)."""
    fn = click.option("--nats", default=None, hidden=True, expose_value=False, callback=_set_nats,
                      is_eager=True)(fn)
    return click.option("-n", "--namespace", default="default", show_default=True, help="namespace")(fn)


# -- apply -----------------------------------------------------------------------------------

@cli.command()
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
            click.echo(f"{_obj_ref(stored)} {result}")
        if failed:
            raise Failed

    if not items:
        _fail("error: no objects passed to apply")
    if not any(isinstance(i, manifests.Document) for i in items):
        for item in items:  # nothing to send: report without contacting the cluster
            click.echo(f"error: {item.message}", err=True)  # type: ignore[union-attr]
        sys.exit(1)
    _run(go, obj["nats"])


def _apply_error(item: manifests.Document, e: errors.KybError) -> str:
    lines = [f'error: error when applying "{item.source}": {e.message}']
    lines += [f"* {d.field}: {d.message}" for d in e.details if f"{d.field}: {d.message}" not in e.message]
    return "\n".join(lines)


def _obj_ref(obj: dict[str, Any]) -> str:
    info = resolve_kind(obj.get("kind", ""))
    return f"{_kind_ref(info)}/{(obj.get('metadata') or {}).get('name', '')}"


# -- get -------------------------------------------------------------------------------------

@cli.command()
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
    targets = _targets(args)

    async def go(api: ApiClient) -> None:
        sections: list[str] = []
        found: list[tuple[Any, list[dict[str, Any]]]] = []
        failed = False
        watcher = None
        if watch:  # watch first, list second: nothing changed in between goes unseen
            from kyb.cli.streams import KindWatch

            info0 = targets[0][0]
            watcher = KindWatch(api.nc, info0, _namespace(info0, namespace, all_namespaces))
            await watcher.start()
        for info, names in targets:
            ns = _namespace(info, namespace, all_namespaces)
            if names:
                objs = []
                for name in names:
                    try:
                        objs.append(await api.get(info.plural, namespace if info.namespaced else None, name))
                    except errors.NotFound:
                        click.echo(server_error(_not_found(info, name)), err=True)
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
                    click.echo(f"{_kind_ref(info)}/{o['metadata']['name']}")
        else:
            now = _now()
            for info, objs in found:
                if not objs:
                    continue
                head, rows = printers.table(info.kind, objs, now, wide=fmt == "wide",
                                            all_namespaces=all_namespaces and info.namespaced, show_labels=show_labels)
                if len(found) > 1:
                    rows = [[f"{_kind_ref(info)}/{r[0]}", *r[1:]] if not all_namespaces else r for r in rows]
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
            head, rows = printers.table(info0.kind, found[0][1], _now(), wide=fmt == "wide",
                                        all_namespaces=all_namespaces and info0.namespaced, show_labels=show_labels)
            if not found[0][1] and fmt not in ("yaml", "json", "name"):
                click.echo(output.render_table(head, []), nl=False)
            await _watch(watcher, info0, fmt, set(targets[0][1]), all_namespaces, listed,
                         output.column_widths(head, rows), show_labels)
        if failed:
            raise Failed

    _run(go, obj["nats"])


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
            click.echo(f"{_kind_ref(info)}/{name}")
        else:
            head, rows = printers.table(info.kind, [o], _now(), wide=fmt == "wide",
                                        all_namespaces=all_namespaces and info.namespaced, show_labels=show_labels)
            line = output.render_table(head, rows, header=False, min_widths=widths).rstrip("\n")
            click.echo(line + ("   (deleted)" if event == "DELETED" else ""))


def _revision(meta: dict[str, Any]) -> int:
    try:
        return int(meta.get("resourceVersion") or 0)
    except ValueError:
        return 0


# -- describe --------------------------------------------------------------------------------

@cli.command()
@click.argument("args", nargs=-1, required=True)
@namespace_opt
@click.pass_obj
def describe(obj: dict[str, Any], args: tuple[str, ...], namespace: str) -> None:
    """Show an object in detail, with its recent events."""
    from kyb.cli.streams import events_filter, read_events

    targets = _targets(args)

    async def go(api: ApiClient) -> None:
        texts = []
        for info, names in targets:
            ns = _namespace(info, namespace)
            objs = ([await _get_or_not_found(api, info, ns, n) for n in names] if names
                    else await api.list(info.plural, ns))
            for o in objs:
                meta = o.get("metadata") or {}
                events = await read_events(api.nc, events_filter(meta.get("namespace"), o.get("kind"), meta["name"]))
                texts.append(describe_mod.describe(o, events, _now()))
        if not texts:
            click.echo(f"No resources found in {namespace} namespace.", err=True)
        click.echo("\n\n".join(texts), nl=False)

    _run(go, obj["nats"])


async def _get_or_not_found(api: ApiClient, info: Any, ns: str | None, name: str) -> dict[str, Any]:
    try:
        return await api.get(info.plural, ns, name)
    except errors.NotFound:
        raise _not_found(info, name) from None


# -- delete ----------------------------------------------------------------------------------

@cli.command()
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
                _fail(f"error: {item.message}")
                return
            info = resolve_kind(str(item.body.get("kind", "")))
            meta = item.body.get("metadata") or {}
            plan.append((info, _namespace(info, meta.get("namespace") or namespace), meta.get("name", "")))
    else:
        targets = _targets(args)
        for info, names in targets:
            if names:
                plan += [(info, _namespace(info, namespace), n) for n in names]
            elif selector or delete_all:
                by_query.append(info)
            else:
                raise click.UsageError(f"resource(s) were provided, but no name was specified "
                                       f"(use --all or -l to delete {info.plural} by query)")

    async def go(api: ApiClient) -> None:
        work = list(plan)
        for info in by_query:
            ns = _namespace(info, namespace)
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
                click.echo(server_error(_not_found(info, name)), err=True)
                failed = True
                continue
            click.echo(f'{_kind_ref(info)} "{name}" {"force deleted" if grace == 0 else "deleted"}')
            deleted.append((info, ns, name))
        if wait and deleted:
            await _wait_gone(api, deleted, timeout)
        if failed:
            raise Failed

    _run(go, obj["nats"])


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
            names = ", ".join(f'{_kind_ref(i)} "{n}"' for i, _, n in pending)
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


@cli.command()
@click.argument("args", nargs=-1, required=True)
@namespace_opt
@click.pass_obj
def edit(obj: dict[str, Any], args: tuple[str, ...], namespace: str) -> None:
    """Edit an object in $EDITOR and replace it (refused if it changed meanwhile)."""
    targets = _targets(args)
    if len(targets) != 1 or len(targets[0][1]) != 1:
        raise click.UsageError("edit takes exactly one object: KIND NAME or KIND/NAME")
    info, (name,) = targets[0]
    ns = _namespace(info, namespace)

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
            click.echo(f"error: {_kind_ref(info)} \"{name}\" could not be saved: {server_error(e)}", err=True)
            click.echo(f'A copy of your changes has been stored to "{path}"', err=True)
            raise Failed from None
        os.unlink(path)
        click.echo(f"{_obj_ref(stored)} edited")

    _run(go, obj["nats"])


def _yaml_problem(e: yaml.YAMLError, source: str) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"error parsing {source}: line {mark.line + 1}: {problem}" if mark else f"error parsing {source}: {problem}"


# -- api-resources, version, events ---------------------------------------------------------

@cli.command("api-resources")
@namespace_opt
def api_resources(namespace: str) -> None:
    """The kinds this cluster serves."""
    from schemas.registry import all_kinds

    rows = [[k.plural, ",".join(k.short_names), k.api_version, "true" if k.namespaced else "false", k.kind]
            for k in all_kinds()]
    click.echo(output.render_table(["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], rows), nl=False)


def _client_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kybernetes")
    except PackageNotFoundError:
        return "unknown"


@cli.command()
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


@cli.command()
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
        now = _now()
        if watch:
            head, _ = printers.table("Event", [], now, all_namespaces=all_namespaces)
            click.echo(output.render_table(head, []), nl=False)
            async for ev in follow_events(api.nc, subject):
                _, rows = printers.table("Event", [ev], _now(), all_namespaces=all_namespaces)
                click.echo(output.render_table(head, rows, header=False), nl=False)
            return
        evs = await read_events(api.nc, subject, limit=1000)
        if not evs:
            where = "" if all_namespaces else f" in {namespace} namespace"
            click.echo(f"No events found{where}.", err=True)
            return
        head, rows = printers.table("Event", evs, now, all_namespaces=all_namespaces)
        click.echo(output.render_table(head, rows), nl=False)

    _run(go, obj["nats"])


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


@cli.command()
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
        network, notice = netmode.choose(network, nodes)
    except ValueError as e:
        _fail(f"error: {e}")
    if notice:
        click.echo(notice, err=True)
    if not _port_free("127.0.0.1", nats_port):
        _fail(f"error: port {nats_port} on 127.0.0.1 is already in use; choose another with --nats-port")
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
        _fail(f"error: cannot start nats-server: {e} (log: {data_dir / 'nats.log'})")
    names = [n for n in SERVICES if n in set(available_services())]
    options: dict[str, Any] = {"data_dir": str(data_dir), "auth_dir": str(layout.dir),
                               "secret_key_file": str(key_file), "node_name": node,
                               "cluster_defaults_file": str(data_dir / "defaults.json"),
                               "disable_defaults": sorted(disabled), "apiserver_port": apiserver_port}
    if network == "cni":
        options.update(netmode.cni_options(data_dir))
    for item in service_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"error: --option takes KEY=VALUE, not {item!r}")
        options[key.replace("-", "_")] = value
    if runtime:
        options["runtime"] = runtime
    if nodes > 1:
        from kyb.cli.multinode import kubelet_instances

        options["instances"] = {"kubelet": kubelet_instances(nodes, data_dir)}
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


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
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
        _fail(f"error: unknown service {name!r}; known: {', '.join(SERVICES)}")
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
        _fail(f"error: {e}")
    except KeyboardInterrupt:
        pass


def _add_node_commands() -> None:
    with contextlib.suppress(ImportError):
        from kyb.cli.podio import exec_command_cli, logs_command

        cli.add_command(logs_command, "logs")
        cli.add_command(exec_command_cli, "exec")
    with contextlib.suppress(ImportError):
        from kyb.cli.top import top_group

        cli.add_command(top_group, "top")
    with contextlib.suppress(ImportError):
        from kyb.cli.nodes import COMMANDS

        for command in COMMANDS:
            cli.add_command(command)
    with contextlib.suppress(ImportError):
        from kyb.cli.rollout import rollout_group, set_group

        cli.add_command(rollout_group, "rollout")
        cli.add_command(set_group, "set")
    with contextlib.suppress(ImportError):
        from kyb.cli.trace import trace_cmd

        cli.add_command(trace_cmd, "trace")
    with contextlib.suppress(ImportError):
        from kyb.cli.autoscale import autoscale_cmd

        cli.add_command(autoscale_cmd, "autoscale")
    with contextlib.suppress(ImportError):
        from kyb.cli.scale import scale_cmd

        cli.add_command(scale_cmd, "scale")
    from kyb.cli.kubeconfig import kubeconfig_cmd

    cli.add_command(kubeconfig_cmd, "kubeconfig")
    from kyb.cli.create import create_group
    from kyb.cli.hollow import hollow_nodes_cmd
    from kyb.cli.label import annotate_cmd, label_cmd

    cli.add_command(hollow_nodes_cmd)
    cli.add_command(create_group, "create")
    cli.add_command(label_cmd, "label")
    cli.add_command(annotate_cmd, "annotate")


_add_node_commands()


def main() -> None:
    cli(prog_name="kyb")


if __name__ == "__main__":
    main()

