"""``kyb trace KIND/NAME``: the span tree of an object's last trip through the cluster, from the
api request to the containers starting, read from the trace stream the services publish to
(see kyb/tracestore.py).

Which trace: every KV write inside a trace is a span naming the object it wrote (attributes
``kyb.kind``, ``kyb.namespace``, ``kyb.name``); of the traces that wrote the object, the one
that started latest with a request to the api wins (any trace that wrote it when none did).
When a Pod created in that trace was later written in traces of its own (its binding, the
kubelet starting it), those follow. ``--trace-id`` shows one trace directly. The tree logic here is pure; the command reads and prints.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.tree import Tree

from kyb import tracestore
from kyb.cli.base import namespace_opt, resolve_kind, run_api
from kyb.client import ApiClient
from kyb.tracestore import SpanRecord


@dataclass
class SpanNode:
    span: SpanRecord
    children: list[SpanNode] = field(default_factory=list)


def touches(span: SpanRecord, kind: str, namespace: str | None, name: str) -> bool:
    a = span.attributes
    return a.get("kyb.kind") == kind and a.get("kyb.name") == name and (a.get("kyb.namespace") or "") == (namespace or "")


def choose_trace(spans: Iterable[SpanRecord], kind: str, namespace: str | None, name: str) -> str | None:
    """The trace id to show for the object (see the module docstring), or None."""
    spans = list(spans)
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for s in spans:
        by_trace[s.traceId].append(s)
    candidates = [t for t, group in by_trace.items() if any(touches(s, kind, namespace, name) for s in group)]
    if not candidates:
        return None

    def rank(trace_id: str) -> tuple[bool, int]:
        group = by_trace[trace_id]
        from_api = any(s.name.startswith("api.") for s in group)
        return from_api, min(s.start for s in group)

    return max(candidates, key=rank)


def follow_ups(spans: Iterable[SpanRecord], trace_id: str) -> list[tuple[str, str]]:
    """Later traces that wrote a Pod created in ``trace_id`` (a binding, the kubelet starting its
    containers, when those arrive in a trace of their own): ``[(pod "ns/name", trace id)]`` in
    start order."""
    spans = list(spans)
    created = {
        (str(s.attributes.get("kyb.namespace") or ""), str(s.attributes.get("kyb.name")))
        for s in spans
        if s.traceId == trace_id and s.attributes.get("kyb.kind") == "Pod" and s.attributes.get("kyb.op") == "create"
    }
    first: dict[tuple[str, str], tuple[int, str]] = {}
    for s in spans:
        if s.traceId == trace_id or s.attributes.get("kyb.kind") != "Pod":
            continue
        pod = (str(s.attributes.get("kyb.namespace") or ""), str(s.attributes.get("kyb.name")))
        if pod in created:
            seen = first.get((pod[0] + "/" + pod[1], s.traceId))
            if seen is None or s.start < seen[0]:
                first[(pod[0] + "/" + pod[1], s.traceId)] = (s.start, s.traceId)
    return [key for key, _ in sorted(first.items(), key=lambda kv: kv[1][0])]


def build_tree(spans: Iterable[SpanRecord]) -> list[SpanNode]:
    """Roots (spans whose parent is not among ``spans``) with their descendants, each level in
    start order; a span seen twice counts once."""
    unique: dict[str, SpanRecord] = {}
    for s in spans:
        unique.setdefault(s.spanId, s)
    nodes = {sid: SpanNode(s) for sid, s in unique.items()}
    roots: list[SpanNode] = []
    for sid, node in nodes.items():
        parent = nodes.get(node.span.parentId)
        if parent is not None and _is_ancestor(sid, parent.span, unique):
            parent = None  # a cycle of parent ids (corrupt data): cut it here
        (parent.children if parent is not None else roots).append(node)

    def order(level: list[SpanNode]) -> None:
        level.sort(key=lambda n: (n.span.start, n.span.spanId))
        for n in level:
            order(n.children)

    order(roots)
    return roots


def _is_ancestor(span_id: str, start: SpanRecord, spans: dict[str, SpanRecord]) -> bool:
    """Whether ``span_id`` is ``start`` or one of its ancestors."""
    seen: set[str] = set()
    cur: SpanRecord | None = start
    while cur is not None and cur.spanId not in seen:
        if cur.spanId == span_id:
            return True
        seen.add(cur.spanId)
        cur = spans.get(cur.parentId)
    return False


def label(span: SpanRecord, origin: int) -> str:
    offset_ms = (span.start - origin) / 1e6
    attrs = span.attributes
    what = ""
    if "kyb.kind" in attrs:
        ns = attrs.get("kyb.namespace") or ""
        what = f" {attrs['kyb.kind']} {ns + '/' if ns else ''}{attrs.get('kyb.name', '')}"
    elif "kyb.key" in attrs:
        what = f" {attrs['kyb.key']}"
    status = " [red]ERROR[/red]" if span.status == "ERROR" else ""
    return (
        f"[bold]{span.name}[/bold]{what}  [dim]{span.service}[/dim]  "
        f"{span.seconds * 1000:.1f} ms  [dim]+{offset_ms:.1f} ms[/dim]{status}"
    )


def render(roots: list[SpanNode], title: str) -> Tree:
    tree = Tree(title)
    origin = min((r.span.start for r in roots), default=0)

    def add(parent: Tree, node: SpanNode) -> None:
        branch = parent.add(label(node.span, origin))
        for child in node.children:
            add(branch, child)

    for root in roots:
        add(tree, root)
    return tree


@click.command("trace")
@click.argument("target", required=False)
@namespace_opt
@click.option("--trace-id", default=None, help="show this trace instead of looking one up")
@click.pass_obj
def trace_cmd(obj: dict[str, Any], target: str | None, namespace: str, trace_id: str | None) -> None:
    """Print the span tree of KIND/NAME's latest trace (apply, controllers, scheduler, kubelet)."""
    if not target and not trace_id:
        raise click.UsageError("give KIND/NAME or --trace-id")

    async def go(api: ApiClient) -> None:
        js = api.nc.jetstream()
        chosen = trace_id
        title = f"trace {trace_id}"
        if chosen is None:
            assert target is not None
            kind_text, _, name = target.partition("/")
            if not name:
                raise click.UsageError("specify the object as KIND/NAME")
            info = resolve_kind(kind_text)
            ns = namespace if info.namespaced else None
            chosen = choose_trace(await tracestore.read_spans(js), info.kind, ns, name)
            if chosen is None:
                click.echo(f"No trace found for {info.kind.lower()}/{name} (traces are kept for an hour)", err=True)
                raise SystemExit(1)
            title = f"{info.kind.lower()}/{name}  trace {chosen}"
        spans = await tracestore.read_spans(js, chosen)
        if not spans:
            click.echo(f"No spans stored for trace {chosen}", err=True)
            raise SystemExit(1)
        console = Console(highlight=False)
        if not console.is_terminal:  # piped: never crop lines
            console = Console(highlight=False, width=240)
        console.print(render(build_tree(spans), title))
        if trace_id is None:
            everything = await tracestore.read_spans(js)
            for pod, later in follow_ups(everything, chosen):
                group = [s for s in everything if s.traceId == later]
                console.print(render(build_tree(group), f"continued for pod {pod}  trace {later}"))

    run_api(go, obj["nats"])
