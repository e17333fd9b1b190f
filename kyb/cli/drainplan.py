"""Which pods ``kyb drain`` evicts, skips or refuses, decided as kubectl's drain filters do.

In kubectl's order, for each pod bound to the node (as the api returns it, a dict):
- mirror pods (annotation ``kubernetes.io/config.mirror``) are skipped: their kubelet owns them;
- DaemonSet-managed pods are skipped with ``--ignore-daemonsets`` (their controller would put
  them right back), and refuse the drain without it;
- pods with emptyDir volumes refuse the drain unless ``--delete-emptydir-data`` (the data goes);
- pods with no controller refuse the drain unless ``--force`` (nothing would recreate them);
- finished pods (Succeeded/Failed) are deleted without asking.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

ERR_DAEMONSET = "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"
ERR_LOCAL_STORAGE = "cannot delete Pods with local storage (use --delete-emptydir-data to override)"
ERR_UNREPLICATED = "cannot delete Pods declare no controller (use --force to override)"
WARN_DAEMONSET = "ignoring DaemonSet-managed Pods"
WARN_LOCAL_STORAGE = "deleting Pods with local storage"
WARN_UNREPLICATED = "deleting Pods that declare no controller"


@dataclass(frozen=True, slots=True)
class DrainOptions:
    ignore_daemonsets: bool = False  # skip DaemonSet-managed pods instead of refusing
    delete_emptydir_data: bool = False  # evict pods with emptyDir volumes, losing their data
    force: bool = False  # evict pods no controller would recreate


@dataclass
class DrainPlan:
    evict: list[dict[str, Any]] = field(default_factory=list)  # pods to evict, in the api's order
    skipped: list[dict[str, Any]] = field(default_factory=list)  # pods left on the node
    errors: dict[str, list[str]] = field(default_factory=dict)  # refusal message -> "ns/name" refs
    warnings: dict[str, list[str]] = field(default_factory=dict)  # warning -> "ns/name" refs

    @property
    def refused(self) -> bool:
        return bool(self.errors)

    def error_lines(self) -> list[str]:
        return [f"{message}: {', '.join(refs)}" for message, refs in self.errors.items()]

    def warning_lines(self) -> list[str]:
        return [f"{message}: {', '.join(refs)}" for message, refs in self.warnings.items()]


def pod_ref(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


def controller_kind(pod: dict[str, Any]) -> str | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("kind", ""))
    return None


def _finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _has_emptydir(pod: dict[str, Any]) -> bool:
    return any("emptyDir" in (v or {}) for v in (pod.get("spec") or {}).get("volumes") or [])


def plan_drain(pods: Iterable[dict[str, Any]], options: DrainOptions) -> DrainPlan:
    plan = DrainPlan()

    def note(into: dict[str, list[str]], message: str, pod: dict[str, Any]) -> None:
        into.setdefault(message, []).append(pod_ref(pod))

    for pod in pods:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        if MIRROR_ANNOTATION in annotations:
            plan.skipped.append(pod)
            continue
        if controller_kind(pod) == "DaemonSet":
            note(plan.warnings if options.ignore_daemonsets else plan.errors,
                 WARN_DAEMONSET if options.ignore_daemonsets else ERR_DAEMONSET, pod)
            plan.skipped.append(pod)
            continue
        refused = False
        if _has_emptydir(pod) and not _finished(pod):
            if options.delete_emptydir_data:
                note(plan.warnings, WARN_LOCAL_STORAGE, pod)
            else:
                note(plan.errors, ERR_LOCAL_STORAGE, pod)
                refused = True
        if controller_kind(pod) is None and not _finished(pod):
            if options.force:
                note(plan.warnings, WARN_UNREPLICATED, pod)
            else:
                note(plan.errors, ERR_UNREPLICATED, pod)
                refused = True
        if refused:
            plan.skipped.append(pod)
        else:
            plan.evict.append(pod)
    return plan
