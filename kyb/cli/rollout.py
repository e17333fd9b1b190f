"""``kyb rollout status|history|undo|pause|resume|restart`` and ``kyb set image``: kubectl's
rollout verbs for Deployments, DaemonSets and StatefulSets, over the api request protocol.

A Deployment's history is its ReplicaSets (``deployment.kubernetes.io/revision``); a
DaemonSet's or StatefulSet's is the ControllerRevisions its controller keeps (``revision``, and ``data`` holding
``{"spec": {"template": ...}}``). ``pause``/``resume`` are for Deployments only, as in kubectl.

Reads are ``get``/``list``; every change is a ``replace`` at the resourceVersion read (so the
api validates it and a concurrent writer makes us re-read and retry, never overwrite).
The messages are kubectl's, so scripts that grep them keep working. ``rollout status`` exits
non-zero when a Deployment exceeds its progress deadline, for a DaemonSet that does not roll
(OnDelete), or when the wait times out.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as _dt
import time
from collections.abc import Callable
from typing import Any

import click
import msgspec
import yaml

from kyb import errors
from kyb.cli.base import Failed, namespace_opt, resolve_kind, run_api
from kyb.cli.params import Duration
from kyb.client import ApiClient
from schemas import apps
from schemas.pod import PodTemplateSpec

REVISION = apps.REVISION_ANNOTATION
CHANGE_CAUSE = apps.CHANGE_CAUSE_ANNOTATION
RESTARTED_AT = apps.RESTARTED_AT_ANNOTATION
HASH_LABEL = apps.POD_TEMPLATE_HASH_LABEL
_NOT_ROLLED_BACK = apps.DEPLOYMENT_ONLY_ANNOTATIONS


# -- pure: what kubectl says --------------------------------------------------------------------


def status_message(d: dict[str, Any]) -> tuple[str, bool]:
    """(message, done) as kubectl's DeploymentStatusViewer; raises RolloutFailed past the deadline."""
    name = d["metadata"]["name"]
    spec, status = d.get("spec") or {}, d.get("status") or {}
    if (d["metadata"].get("generation") or 0) > (status.get("observedGeneration") or 0):
        return "Waiting for deployment spec update to be observed...", False
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None)
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        raise RolloutFailed(f'deployment "{name}" exceeded its progress deadline')
    replicas = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if updated < replicas:
        return (f'Waiting for deployment "{name}" rollout to finish: {updated} out of {replicas} '
                "new replicas have been updated..."), False
    if total > updated:
        return f'Waiting for deployment "{name}" rollout to finish: {total - updated} old replicas are pending termination...', False
    if available < updated:
        return f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} updated replicas are available...', False
    return f'deployment "{name}" successfully rolled out', True


def daemonset_status_message(ds: dict[str, Any]) -> tuple[str, bool]:
    """(message, done) as kubectl's DaemonSetStatusViewer; raises RolloutFailed for OnDelete."""
    name = ds["metadata"]["name"]
    spec, status = ds.get("spec") or {}, ds.get("status") or {}
    if ((spec.get("updateStrategy") or {}).get("type") or "RollingUpdate") != "RollingUpdate":
        raise RolloutFailed("rollout status is only available for RollingUpdate strategy type")
    if (ds["metadata"].get("generation") or 0) > (status.get("observedGeneration") or 0):
        return "Waiting for daemon set spec update to be observed...", False
    desired = int(status.get("desiredNumberScheduled", 0))
    updated = int(status.get("updatedNumberScheduled", 0))
    available = int(status.get("numberAvailable", 0))
    if updated < desired:
        return (f'Waiting for daemon set "{name}" rollout to finish: {updated} out of {desired} '
                "new pods have been updated..."), False
    if available < desired:
        return f'Waiting for daemon set "{name}" rollout to finish: {available} of {desired} updated pods are available...', False
    return f'daemon set "{name}" successfully rolled out', True


def statefulset_status_message(sts: dict[str, Any]) -> tuple[str, bool]:
    """(message, done) as kubectl's StatefulSetStatusViewer; raises RolloutFailed for OnDelete."""
    spec, status = sts.get("spec") or {}, sts.get("status") or {}
    strategy = spec.get("updateStrategy") or {}
    if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
        raise RolloutFailed("rollout status is only available for RollingUpdate strategy type")
    if (sts["metadata"].get("generation") or 0) > (status.get("observedGeneration") or 0):
        return "Waiting for statefulset spec update to be observed...", False
    replicas = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas", 0))
    updated = int(status.get("updatedReplicas", 0))
    if ready < replicas:
        return f"Waiting for {replicas - ready} pods to be ready...", False
    ru = strategy.get("rollingUpdate")
    if ru is not None:
        partition = int(ru.get("partition") or 0)
        if updated < replicas - partition:
            return (f"Waiting for partitioned roll out to finish: {updated} out of {replicas - partition} "
                    "new pods have been updated..."), False
        return f"partitioned roll out complete: {updated} new pods have been updated...", True
    if status.get("updateRevision") != status.get("currentRevision"):
        return (f"waiting for statefulset rolling update to complete {updated} pods at revision "
                f"{status.get('updateRevision')}..."), False
    return (f"statefulset rolling update complete {status.get('currentReplicas', 0)} pods at revision "
            f"{status.get('currentRevision')}..."), True


class RolloutFailed(Exception):
    pass


def revision(obj: dict[str, Any]) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def owned_by(rs: dict[str, Any], d: dict[str, Any]) -> bool:
    uid = d["metadata"].get("uid")
    return any(r.get("controller") and r.get("uid") == uid for r in rs["metadata"].get("ownerReferences") or [])


def _change_cause(obj: dict[str, Any]) -> str:
    return (obj["metadata"].get("annotations") or {}).get(CHANGE_CAUSE) or "<none>"


def history_table(rss: list[dict[str, Any]]) -> str:
    """A Deployment's history from its ReplicaSets."""
    return _table([(revision(rs), _change_cause(rs)) for rs in rss])


def revisions_table(revs: list[dict[str, Any]]) -> str:
    """A DaemonSet's history from its ControllerRevisions."""
    return _table([(int(r.get("revision") or 0), _change_cause(r)) for r in revs])


def _table(rows: list[tuple[int, str]]) -> str:
    rows = sorted(r for r in rows if r[0] > 0)
    width = max([len("REVISION"), *(len(str(r)) for r, _ in rows)]) + 2
    lines = [f"{'REVISION':<{width}}CHANGE-CAUSE"] + [f"{r:<{width}}{cause}" for r, cause in rows]
    return "\n".join(lines)


def template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    return t


def undo_onto(d: dict[str, Any], rs: dict[str, Any]) -> dict[str, Any]:
    """The Deployment with ``rs``'s template (hash label removed) and change-cause annotation."""
    out = copy.deepcopy(d)
    out["spec"]["template"] = template_without_hash(rs["spec"]["template"])
    annotations = out["metadata"].setdefault("annotations", {})
    for k, v in ((rs["metadata"].get("annotations") or {}).items()):
        if k not in _NOT_ROLLED_BACK:
            annotations[k] = v
    out.pop("status", None)
    return out


def revision_template(rev: dict[str, Any]) -> dict[str, Any]:
    """The pod template a ControllerRevision restores."""
    return copy.deepcopy(((rev.get("data") or {}).get("spec") or {}).get("template") or {})


def same_template(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal as pod templates (a revision's data leaves out fields at their defaults; the api does not)."""
    try:
        return msgspec.convert(a, PodTemplateSpec) == msgspec.convert(b, PodTemplateSpec)
    except msgspec.ValidationError:
        return False


def find_revision(revs: list[dict[str, Any]], to_revision: int) -> dict[str, Any] | None:
    """kubectl's findHistory: revision ``to_revision``, or with 0 the one before the latest."""
    ordered = sorted(revs, key=lambda r: int(r.get("revision") or 0))
    if to_revision == 0:
        return ordered[-2] if len(ordered) > 1 else None
    return next((r for r in ordered if int(r.get("revision") or 0) == to_revision), None)


def restore_revision(ds: dict[str, Any], rev: dict[str, Any]) -> dict[str, Any]:
    """The DaemonSet (or StatefulSet) with ``rev``'s template, as kubectl patches the revision's data onto it."""
    out = copy.deepcopy(ds)
    out["spec"]["template"] = revision_template(rev)
    out.pop("status", None)
    return out


def set_images(obj: dict[str, Any], images: dict[str, str]) -> list[str]:
    """Set container images in a pod spec or template; returns the container names not found."""
    spec = obj["spec"]["template"]["spec"] if "template" in (obj.get("spec") or {}) else obj["spec"]
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    missing = []
    for name, image in images.items():
        hit = [c for c in containers if name == "*" or c["name"] == name]
        for c in hit:
            c["image"] = image
        if not hit:
            missing.append(name)
    return missing


ROLLABLE = ("Deployment", "DaemonSet", "StatefulSet")
# kinds whose history is ControllerRevisions: plural and the viewer of `rollout status`
_REVISIONED = {"DaemonSet": ("daemonsets", "daemonset_status_message"),
               "StatefulSet": ("statefulsets", "statefulset_status_message")}


def _target(arg: str, name: str | None) -> tuple[str, str]:
    """``deploy/web``, ``ds web`` ... -> ("Deployment"|"DaemonSet", "web")."""
    kind, _, rest = arg.partition("/")
    if not rest:
        if name is None:
            raise click.UsageError("required resource not specified: give deployment/NAME, daemonset/NAME "
                                   "or statefulset/NAME")
        rest = name
    info = resolve_kind(kind)
    if info.kind not in ROLLABLE:
        raise click.UsageError(f"rollout is supported for daemonsets, statefulsets and deployments only, "
                               f"not {info.plural}")
    return info.kind, rest


def _deployment_ref(arg: str, name: str | None) -> str:
    """``deploy/web`` or ``deployment web`` -> "web"; kubectl's refusal for a DaemonSet."""
    kind, rest = _target(arg, name)
    if kind != "Deployment":
        raise _NotPausable(rest, kind)
    return rest


class _NotPausable(Exception):
    def __init__(self, name: str, kind: str = "DaemonSet") -> None:
        self.name = name
        self.plural = kind.lower() + "s"


def _ref(kind: str, name: str) -> str:
    return f"{kind.lower()}.apps/{name}"


async def _update(api: ApiClient, kind: str, ns: str, name: str,
                  change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any] | None:
    """get -> change -> replace at that resourceVersion; re-read and retry on Conflict."""
    for _ in range(10):
        obj = await api.get(kind, ns, name)
        new = change(copy.deepcopy(obj))
        if new is None:
            return None
        new.pop("status", None)
        try:
            return await api.replace(new, ns)
        except errors.Conflict:
            continue
    raise errors.Conflict(f'{kind}.apps "{name}" kept changing; try again')


async def _replica_sets(api: ApiClient, d: dict[str, Any], ns: str) -> list[dict[str, Any]]:
    return [rs for rs in await api.list("replicasets", ns) if owned_by(rs, d)]


async def _controller_revisions(api: ApiClient, ds: dict[str, Any], ns: str) -> list[dict[str, Any]]:
    return [r for r in await api.list("controllerrevisions", ns) if owned_by(r, ds)]


def _rfc3339_now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# -- commands -----------------------------------------------------------------------------------


@click.group("rollout")
def rollout_group() -> None:
    """Manage the rollout of a Deployment."""


@rollout_group.command("status")
@click.argument("target")
@click.argument("name", required=False)
@namespace_opt
@click.option("-w", "--watch", type=click.BOOL, default=True, is_flag=False, flag_value=True, show_default=True,
              help="wait until the rollout finishes (--watch=false: report once)")
@click.option("--no-watch", "no_watch", is_flag=True, hidden=True)
@click.option("--timeout", type=Duration(), default="0",
              help="how long to wait before giving up: seconds or a duration (90s, 5m); 0: forever")
@click.pass_obj
def status_cmd(obj: dict[str, Any], target: str, name: str | None, namespace: str, watch: bool, no_watch: bool,
               timeout: float) -> None:
    """Show the status of the rollout; with --watch (default) wait for it to finish."""
    watch = watch and not no_watch
    kind, dname = _target(target, name)
    plural, viewer = ("deployments", status_message)
    if kind in _REVISIONED:
        plural, viewer = _REVISIONED[kind][0], globals()[_REVISIONED[kind][1]]

    async def go(api: ApiClient) -> None:
        deadline = time.monotonic() + timeout if timeout > 0 else None
        last = ""
        while True:
            d = await api.get(plural, namespace, dname)
            try:
                message, done = viewer(d)
            except RolloutFailed as e:
                click.echo(f"error: {e}", err=True)
                raise Failed from None
            if message != last:
                click.echo(message)
                last = message
            if done or not watch:
                return
            if deadline is not None and time.monotonic() > deadline:
                click.echo("error: timed out waiting for the condition", err=True)
                raise Failed
            await asyncio.sleep(0.25)

    run_api(go, obj["nats"])


@rollout_group.command("history")
@click.argument("target")
@click.argument("name", required=False)
@namespace_opt
@click.option("--revision", "rev", type=int, default=0, help="show the pod template of this revision")
@click.pass_obj
def history_cmd(obj: dict[str, Any], target: str, name: str | None, namespace: str, rev: int) -> None:
    """The revisions of a Deployment or DaemonSet and their change causes."""
    kind, dname = _target(target, name)
    if kind in _REVISIONED:
        run_api(lambda api: _daemonset_history(api, namespace, dname, rev, kind), obj["nats"])
        return

    async def go(api: ApiClient) -> None:
        d = await api.get("deployments", namespace, dname)
        rss = await _replica_sets(api, d, namespace)
        if rev:
            rs = next((r for r in rss if revision(r) == rev), None)
            if rs is None:
                click.echo(f"error: unable to find the specified revision {rev}", err=True)
                raise Failed
            click.echo(f"deployment.apps/{dname} with revision #{rev}")
            click.echo("Pod Template:")
            text = yaml.safe_dump(template_without_hash(rs["spec"]["template"]), sort_keys=False)
            click.echo("\n".join("  " + line for line in text.splitlines()))
            return
        click.echo(f"deployment.apps/{dname}")
        click.echo(history_table(rss))

    run_api(go, obj["nats"])


async def _daemonset_history(api: ApiClient, namespace: str, name: str, rev: int, kind: str = "DaemonSet") -> None:
    ds = await api.get(_REVISIONED[kind][0], namespace, name)
    revs = await _controller_revisions(api, ds, namespace)
    if rev:
        found = next((r for r in revs if int(r.get("revision") or 0) == rev), None)
        if found is None:
            click.echo(f"error: unable to find the specified revision {rev}", err=True)
            raise Failed
        click.echo(f"{_ref(kind, name)} with revision #{rev}")
        click.echo("Pod Template:")
        text = yaml.safe_dump(revision_template(found), sort_keys=False)
        click.echo("\n".join("  " + line for line in text.splitlines()))
        return
    click.echo(_ref(kind, name))
    click.echo(revisions_table(revs))


async def _daemonset_undo(api: ApiClient, namespace: str, name: str, to_revision: int, kind: str = "DaemonSet") -> None:
    plural = _REVISIONED[kind][0]
    ds = await api.get(plural, namespace, name)
    revs = await _controller_revisions(api, ds, namespace)
    rev = find_revision(revs, to_revision)
    if rev is None:
        click.echo(f"error: unable to find specified revision {to_revision} in history", err=True)
        raise Failed
    number = int(rev.get("revision") or 0)
    if same_template(revision_template(rev), ds["spec"]["template"]):
        click.echo(f"{_ref(kind, name)} skipped rollback (current template already matches revision {number})")
        return
    await _update(api, plural, namespace, name, lambda cur: restore_revision(cur, rev))
    click.echo(f"{_ref(kind, name)} rolled back")


@rollout_group.command("undo")
@click.argument("target")
@click.argument("name", required=False)
@namespace_opt
@click.option("--to-revision", type=int, default=0, help="the revision to go back to (0: the previous one)")
@click.pass_obj
def undo_cmd(obj: dict[str, Any], target: str, name: str | None, namespace: str, to_revision: int) -> None:
    """Roll back to an earlier revision: its template becomes the Deployment's or DaemonSet's."""
    kind, dname = _target(target, name)
    if kind in _REVISIONED:
        run_api(lambda api: _daemonset_undo(api, namespace, dname, to_revision, kind), obj["nats"])
        return

    async def go(api: ApiClient) -> None:
        d = await api.get("deployments", namespace, dname)
        if (d.get("spec") or {}).get("paused"):
            click.echo(f'error: you cannot rollback a paused deployment; resume it first with '
                       f'\'kyb rollout resume deployment/{dname}\' and try again', err=True)
            raise Failed
        rss = sorted(await _replica_sets(api, d, namespace), key=revision)
        if to_revision:
            rs = next((r for r in rss if revision(r) == to_revision), None)
            if rs is None:
                click.echo(f"error: unable to find specified revision {to_revision} in history", err=True)
                raise Failed
        else:
            current = revision(d)
            earlier = [r for r in rss if 0 < revision(r) < current] or [r for r in rss if revision(r) != current]
            if not earlier:
                click.echo("error: no rollout history found for deployment " + f'"{dname}"', err=True)
                raise Failed
            rs = earlier[-1]
        wanted = template_without_hash(rs["spec"]["template"])
        if wanted == template_without_hash(d["spec"]["template"]):
            click.echo(f"deployment.apps/{dname} skipped rollback (current template already matches revision "
                       f"{revision(rs)})")
            return
        await _update(api, "deployments", namespace, dname, lambda cur: undo_onto(cur, rs))
        click.echo(f"deployment.apps/{dname} rolled back")

    run_api(go, obj["nats"])


def _toggle_pause(paused: bool) -> Callable[..., None]:
    word = "paused" if paused else "resumed"

    def command(obj: dict[str, Any], target: str, name: str | None, namespace: str) -> None:
        try:
            dname = _deployment_ref(target, name)
        except _NotPausable as e:
            raise click.ClickException(f'{e.plural}.apps "{e.name}" {"pausing" if paused else "resuming"} '
                                       "is not supported") from None

        async def go(api: ApiClient) -> None:
            def change(d: dict[str, Any]) -> dict[str, Any] | None:
                if bool((d.get("spec") or {}).get("paused")) == paused:
                    return None
                d["spec"]["paused"] = paused
                return d

            if await _update(api, "deployments", namespace, dname, change) is None:
                click.echo(f'error: deployments.apps "{dname}" is {"already" if paused else "not"} paused', err=True)
                raise Failed
            click.echo(f"deployment.apps/{dname} {word}")

        run_api(go, obj["nats"])

    return command


for _paused, _name, _help in ((True, "pause", "Stop rollouts of a Deployment (scaling still works)."),
                              (False, "resume", "Let a paused Deployment roll out again.")):
    rollout_group.command(_name, help=_help)(
        click.argument("target")(click.argument("name", required=False)(
            namespace_opt(click.pass_obj(_toggle_pause(_paused)))))
    )


@rollout_group.command("restart")
@click.argument("target")
@click.argument("name", required=False)
@namespace_opt
@click.pass_obj
def restart_cmd(obj: dict[str, Any], target: str, name: str | None, namespace: str) -> None:
    """Replace every pod by rolling out the same template with a new restartedAt annotation."""
    kind, dname = _target(target, name)
    plural = _REVISIONED[kind][0] if kind in _REVISIONED else "deployments"

    async def go(api: ApiClient) -> None:
        def change(d: dict[str, Any]) -> dict[str, Any]:
            if (d.get("spec") or {}).get("paused"):
                raise errors.BadRequest("can't restart paused deployment (run rollout resume first)")
            meta = d["spec"]["template"].setdefault("metadata", {})
            meta.setdefault("annotations", {})[RESTARTED_AT] = _rfc3339_now()
            return d

        await _update(api, plural, namespace, dname, change)
        click.echo(f"{_ref(kind, dname)} restarted")

    run_api(go, obj["nats"])


@click.group("set")
def set_group() -> None:
    """Change specific fields of objects."""


@set_group.command("image")
@click.argument("target")
@click.argument("images", nargs=-1, required=True)
@namespace_opt
@click.pass_obj
def set_image_cmd(obj: dict[str, Any], target: str, images: tuple[str, ...], namespace: str) -> None:
    """kyb set image deploy/NAME CONTAINER=IMAGE [CONTAINER=IMAGE...] (CONTAINER may be *)."""
    kind, _, name = target.partition("/")
    if not name:
        raise click.UsageError("give the object as KIND/NAME, e.g. deploy/web")
    info = resolve_kind(kind)
    pairs: dict[str, str] = {}
    for item in images:
        cname, sep, image = item.partition("=")
        if not sep or not cname or not image:
            raise click.UsageError(f"expected CONTAINER=IMAGE, got {item!r}")
        pairs[cname] = image

    async def go(api: ApiClient) -> None:
        def change(o: dict[str, Any]) -> dict[str, Any] | None:
            missing = set_images(o, pairs)
            if missing:
                raise errors.NotFound(f'unable to find container named "{missing[0]}"')
            return o

        await _update(api, info.plural, namespace, name, change)
        click.echo(f"{info.kind.lower()}{'.' + info.group if info.group else ''}/{name} image updated")

    run_api(go, obj["nats"])


__all__ = ["rollout_group", "set_group", "status_message", "daemonset_status_message",
           "statefulset_status_message", "history_table",
           "revisions_table", "undo_onto", "restore_revision", "find_revision", "set_images"]
