"""The pure half of running a handler (a probe or a lifecycle hook) against a container.

Where an httpGet handler sends its request (the pod's address unless ``host`` is given, a
port by number or by the name of one of the container's ports, the path, the scheme and the
headers), how long a pod may still be active under ``spec.activeDeadlineSeconds``, and the
messages the kubelet records when a lifecycle hook fails, worded as Kubernetes words them.
The I/O that uses these lives in ``probes.py`` and ``hooks.py``.

No I/O, no asyncio: ``now`` is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas.helpers import parse_time
from schemas.pod import Container, HTTPGetAction, Pod

PROBE_USER_AGENT = "kube-probe/1.30"
HOOK_USER_AGENT = "kube-lifecycle/1.30"
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """The GET an httpGet handler sends."""

    url: str
    headers: dict[str, str]


def resolve_port(port: int | str, container: Container) -> int:
    """A handler's port: a number, a number written as a string, or the name of one of the
    container's ports (ValueError when it names none)."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for p in container.ports:
        if p.name == port:
            return p.containerPort
    raise ValueError(f"port {port!r} is not a named port of container {container.name!r}")


def http_request(action: HTTPGetAction, container: Container, pod_ip: str, user_agent: str) -> HttpRequest:
    """The request of an httpGet handler: to ``host`` or else the pod's address; the
    handler's own headers override the default User-Agent and Accept."""
    port = resolve_port(action.port, container)
    host = action.host or pod_ip
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    path = action.path or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = {"User-Agent": user_agent, "Accept": "*/*"}
    for h in action.httpHeaders:
        headers[h.name] = h.value
    return HttpRequest(url=f"{action.scheme.lower()}://{host}:{port}{path}", headers=headers)


def pod_ref(pod: Pod) -> str:
    """A pod as the kubelet names it in messages: ``name_namespace(uid)``."""
    return f"{pod.metadata.name}_{pod.metadata.namespace or 'default'}({pod.metadata.uid or ''})"


def exec_hook_failure(command: list[str], container: str, pod: Pod, error: str) -> str:
    """The message of a failed exec hook (the command's output is part of ``error``)."""
    return (
        f"Exec lifecycle hook ([{' '.join(command)}]) for Container \"{container}\" in Pod "
        f"\"{pod_ref(pod)}\" failed - error: {error}"
    )


def http_hook_failure(path: str, container: str, pod: Pod, error: str) -> str:
    return (
        f"HTTP lifecycle hook ({path}) for Container \"{container}\" in Pod \"{pod_ref(pod)}\" "
        f"failed - error: {error}"
    )


def deadline_left(pod: Pod, now: datetime) -> float | None:
    """Seconds the pod may still be active under ``spec.activeDeadlineSeconds``, counted from
    ``status.startTime`` (``now`` when the pod has not started yet); None without a deadline.
    Zero or less means the deadline has passed."""
    seconds = pod.spec.activeDeadlineSeconds
    if seconds is None:
        return None
    if not pod.status.startTime:
        return float(seconds)
    started = parse_time(pod.status.startTime)
    return seconds - (now - started).total_seconds()
