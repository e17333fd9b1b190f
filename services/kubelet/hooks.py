"""Running a container's lifecycle hooks (postStart, preStop).

A hook is an exec inside the container (through the runtime, as exec probes run), an HTTP
GET to the pod's address (as httpGet probes send it, with the ``kube-lifecycle`` user agent),
or a sleep. As in Kubernetes, an httpGet hook fails only when nothing answers: any HTTP
status is a completed hook. ``tcpSocket`` is accepted by the API but not supported as a
hook, so such a hook fails when it runs.

``run`` returns None when the hook completed and otherwise the message the kubelet records
in its FailedPostStartHook / FailedPreStopHook event. Deciding what a failure means (kill
the container, or carry on stopping it) is the pod worker's business.
"""

from __future__ import annotations

import asyncio

import httpx

from schemas.pod import Container, LifecycleHandler, Pod
from services.kubelet.handlers import HOOK_USER_AGENT, exec_hook_failure, http_hook_failure
from services.kubelet.probes import exec_command, new_http_client, send_get
from services.kubelet.runtime.base import ContainerRuntime

UNBOUNDED = 24 * 3600.0  # seconds: the exec timeout of a hook that has no deadline (postStart)


class HookRunner:
    """Runs hooks for the pod worker; owns the HTTP client its httpGet hooks share."""

    def __init__(self, runtime: ContainerRuntime, http: httpx.AsyncClient | None = None) -> None:
        self.runtime = runtime
        self._http = http

    async def run(
        self,
        hook: LifecycleHandler,
        pod: Pod,
        container: Container,
        container_id: str,
        pod_ip: str,
        timeout: float | None = None,
    ) -> str | None:
        """Run ``hook`` for ``container``; ``timeout`` bounds it (None: as long as it takes)."""
        if hook.exec is not None:
            ok, why = await exec_command(
                self.runtime, container_id, list(hook.exec.command), UNBOUNDED if timeout is None else timeout
            )
            return None if ok else exec_hook_failure(hook.exec.command, container.name, pod, why or "")
        if hook.httpGet is not None:
            if self._http is None:
                self._http = new_http_client()
            code, why = await send_get(self._http, hook.httpGet, container, pod_ip, timeout, HOOK_USER_AGENT)
            return None if code is not None else http_hook_failure(hook.httpGet.path, container.name, pod, why or "")
        if hook.sleep is not None:
            seconds = float(max(0, hook.sleep.seconds))
            await asyncio.sleep(seconds if timeout is None else min(seconds, max(0.0, timeout)))
            return None
        if hook.tcpSocket is not None:
            return f"invalid handler: tcpSocket is not supported as a lifecycle hook (Container \"{container.name}\")"
        return None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
