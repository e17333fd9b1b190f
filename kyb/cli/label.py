"""``kyb label`` and ``kyb annotate``: kubectl's commands, through the api (get, change, then
replace at the revision read, so the api validates the keys and values and a concurrent change
is retried on a fresh read, never overwritten).

    kyb label pods web app=web tier-          set app, remove tier
    kyb annotate deploy/web note=hello --overwrite
"""

from __future__ import annotations

import copy
from typing import Any

import click

from kyb import errors
from kyb.cli.base import namespace_opt, parse_targets, run_api
from kyb.cli.printers import kind_ref
from kyb.client import ApiClient

ATTEMPTS = 5


def parse_changes(changes: tuple[str, ...], what: str) -> tuple[dict[str, str], list[str]]:
    """``key=value`` to set and ``key-`` to remove, as kubectl reads them."""
    sets: dict[str, str] = {}
    removes: list[str] = []
    for c in changes:
        if "=" in c:
            key, _, value = c.partition("=")
            if not key:
                raise click.UsageError(f"invalid {what} spec: {c}")
            sets[key] = value
        elif c.endswith("-") and len(c) > 1:
            removes.append(c[:-1])
        else:
            raise click.UsageError(f"invalid {what} spec: {c}")
    clash = set(sets) & set(removes)
    if clash:
        raise click.UsageError(f"can not both modify and remove the following {what}(s) in the same command: "
                               f"{', '.join(sorted(clash))}")
    return sets, removes


def changed(obj: dict[str, Any], field: str, sets: dict[str, str], removes: list[str],
            overwrite: bool) -> tuple[dict[str, Any] | None, list[str]]:
    """``obj`` with its ``metadata.<field>`` changed (None when nothing changes) and the keys to
    remove that it did not have; a value that would be replaced without ``overwrite`` is an
    error, worded as kubectl's."""
    meta = obj.get("metadata") or {}
    current: dict[str, str] = dict(meta.get(field) or {})
    for key, value in sets.items():
        if key in current and current[key] != value and not overwrite:
            raise click.ClickException(f"'{key}' already has a value ({current[key]}), and --overwrite is false")
    missing = [k for k in removes if k not in current]
    wanted = {k: v for k, v in current.items() if k not in removes}
    wanted.update(sets)
    if wanted == current:
        return None, missing
    out = copy.deepcopy(obj)
    out["metadata"][field] = wanted
    out.pop("status", None)
    return out, missing


def _command(name: str, field: str, verb: str) -> click.Command:
    what = field[:-1]

    @click.command(name, help=f"Update the {field} of objects: KEY=VALUE sets, KEY- removes "
                              f"(kyb {name} KIND NAME... CHANGES or KIND/NAME... CHANGES).")
    @click.argument("args", nargs=-1, required=True)
    @click.option("--overwrite", is_flag=True, help=f"replace a {what} that already has a value")
    @namespace_opt
    @click.pass_obj
    def command(obj: dict[str, Any], args: tuple[str, ...], overwrite: bool, namespace: str) -> None:
        # The first argument is a kind (or KIND/NAME); then names, then the changes: a change
        # holds "=" or ends in "-", which no object name does.
        is_change = [i > 0 and ("=" in a or a.endswith("-")) for i, a in enumerate(args)]
        resources = tuple(a for a, c in zip(args, is_change, strict=True) if not c)
        changes = tuple(a for a, c in zip(args, is_change, strict=True) if c)
        if not changes:
            raise click.UsageError(f"at least one {what} update is required")
        sets, removes = parse_changes(changes, what)
        targets = parse_targets(resources)
        for info, names in targets:
            if not names:
                raise click.UsageError(f"specify the name of the {info.kind.lower()} to {name}")

        async def go(api: ApiClient) -> None:
            for info, names in targets:
                for obj_name in names:
                    ns = namespace if info.namespaced else None
                    for attempt in range(ATTEMPTS):
                        current = await api.get(info.plural, ns, obj_name)
                        new, missing = changed(current, field, sets, removes, overwrite)
                        for key in missing:
                            click.echo(f'{what} "{key}" not found.', err=True)
                        if new is None:
                            click.echo(f"{kind_ref(info.kind, info.group)}/{obj_name} not {verb}")
                            break
                        try:
                            await api.replace(new, ns)
                        except errors.Conflict:
                            if attempt == ATTEMPTS - 1:
                                raise
                            continue
                        click.echo(f"{kind_ref(info.kind, info.group)}/{obj_name} {verb}")
                        break

        run_api(go, obj["nats"])

    return command


label_cmd = _command("label", "labels", "labeled")
annotate_cmd = _command("annotate", "annotations", "annotated")
