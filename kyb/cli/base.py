"""What every `kyb` command shares (as pip's cli/base_command.py and cmdoptions.py): the
runner that connects, calls one async function and turns errors into kubectl's one-line
messages and exit codes; the shared options; and how kind arguments resolve.

Exit codes: 0 success; 1 an error from the server, bad input or NATS unreachable or refusing
the credentials; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import msgspec

from kyb import errors
from kyb.cli import printers
from kyb.client import ApiClient, connect

DEFAULT_NATS = "nats://127.0.0.1:4222"
T = TypeVar("T")


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class Failed(Exception):
    """Some of the work failed; the messages were already printed."""


def run_api(fn: Callable[[ApiClient], Awaitable[T]], nats_url: str, timeout: float = 5.0) -> T:
    """Connect, run ``fn`` with an ApiClient, close; errors become kubectl-style lines + exit 1."""

    provider = start_tracing()

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
        fail(f"error: {e.message}")
    except errors.Temporary as e:
        fail(f"error: {e.message}")
    except errors.KybError as e:
        fail(server_error(e))
    except LookupError as e:  # schemas.registry.UnknownKind
        fail(f"error: {e.args[0] if e.args else e}")
    finally:
        if provider is not None:
            with contextlib.suppress(Exception):
                provider.force_flush()  # hand spans to the OTLP endpoint, if one is set
    raise AssertionError("unreachable")


def start_tracing() -> Any:
    """The CLI starts the trace of each request (exported when OTEL_EXPORTER_OTLP_ENDPOINT is set)."""
    from kyb import telemetry

    return telemetry.init_telemetry("kyb")


def fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


def server_error(e: errors.KybError) -> str:
    """``Error from server (NotFound): pods "x" not found`` with one line per field detail."""
    lines = [f"Error from server ({e.reason}): {e.message}"]
    lines += [f"* {d.field}: {d.message}" for d in e.details if d.field and d.field not in e.message]
    return "\n".join(lines)


_LOOKED_UP: set[str] = set()


def load_custom_kinds(nats_url: str) -> None:
    """Serve, in this process, the kinds the cluster's CustomResourceDefinitions make (read
    once over the bus; from a thread of its own, so it also works inside a running loop)."""
    from concurrent.futures import ThreadPoolExecutor

    from kyb.customkinds import serve
    from schemas.apiextensions import CustomResourceDefinition
    from schemas.registry import by_kind

    async def fetch() -> list[dict[str, Any]]:
        nc = await connect(nats_url)
        try:
            return await ApiClient(nc, timeout=5.0).list("customresourcedefinitions", None)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    with ThreadPoolExecutor(1) as pool:
        crds = pool.submit(asyncio.run, fetch()).result()
    crd_type = by_kind("CustomResourceDefinition").type
    for doc in crds:
        crd = msgspec.convert(doc, crd_type)
        if isinstance(crd, CustomResourceDefinition):
            serve(crd)


def resolve_kind(name: str) -> Any:
    """The kind a user names: a built-in one, or one of the cluster's custom kinds (their
    CRDs are read from the cluster the first time a name is not known here)."""
    from schemas.registry import resolve

    try:
        return resolve(name)
    except LookupError:
        pass
    ctx = click.get_current_context(silent=True)
    url = (ctx.find_root().obj or {}).get("nats") if ctx is not None else None
    if url and name.lower() not in _LOOKED_UP:
        _LOOKED_UP.add(name.lower())
        with contextlib.suppress(errors.KybError, OSError):
            load_custom_kinds(url)
        with contextlib.suppress(LookupError):
            return resolve(name)
    raise click.ClickException(f'the server doesn\'t have a resource type "{name}"')


def kind_ref(info: Any) -> str:
    return printers.kind_ref(info.kind, info.group)


def not_found(info: Any, name: str) -> errors.NotFound:
    return errors.NotFound(f'{info.plural}{"." + info.group if info.group else ""} "{name}" not found')


def namespace_scope(info: Any, namespace: str, all_namespaces: bool = False) -> str | None:
    if not info.namespaced or all_namespaces:
        return None
    return namespace


# kubectl's "all" category: the workload kinds and Services (`kyb get all`, `kyb delete all --all`).
ALL_CATEGORY = ("pods", "replicationcontrollers", "services", "daemonsets", "deployments", "replicasets",
                "statefulsets", "horizontalpodautoscalers", "cronjobs", "jobs")


def parse_targets(args: tuple[str, ...]) -> list[tuple[Any, list[str]]]:
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



def _set_nats(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(dict)["nats"] = value


def nats_opt(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--nats`` accepted after the command as well (as kubectl's global flags are)."""
    return click.option("--nats", default=None, hidden=True, expose_value=False, callback=_set_nats,
                        is_eager=True)(fn)


def namespace_opt(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-n/--namespace``, and ``--nats`` after the command."""
    return click.option("-n", "--namespace", default="default", show_default=True, help="namespace")(nats_opt(fn))


def run_exit_code(coro: Awaitable[int]) -> int:
    """Run a command whose result is an exit code (``kyb exec`` passes on its command's);
    an error is one line and 1, an interrupt 130."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except errors.KybError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130



def obj_ref(obj: dict[str, Any]) -> str:
    info = resolve_kind(obj.get("kind", ""))
    return f"{kind_ref(info)}/{(obj.get('metadata') or {}).get('name', '')}"
