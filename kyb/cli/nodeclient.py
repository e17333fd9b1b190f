"""The client side of the kubelet's node API (``kyb.node.<node>.logs|exec``) and of the
metrics samples (``kyb.metrics.<node>``), shared by ``kyb logs``, ``kyb exec`` and ``kyb top``.

It finds which node runs a pod through the api (``kyb.api.get``), picks the container the
way kubectl does (the only one, the ``kubectl.kubernetes.io/default-container`` annotation,
else an error naming the choices), and speaks the node protocol described in
``services/kubelet/nodeapi.py``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from kyb.client import ApiClient
from kyb.errors import BadRequest, KybError, NotFound, Temporary, from_status

EOF_HEADER = "Kyb-EOF"
STATUS_HEADER = "Kyb-Status"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"

# Metrics samples: published on kyb.metrics.<node>; the last one per node is kept in this stream.
METRICS_STREAM = "KYB_METRICS"
METRICS_SUBJECTS = "kyb.metrics.>"
METRICS_MAX_AGE_S = 300.0


def metrics_stream_config() -> StreamConfig:
    return StreamConfig(
        name=METRICS_STREAM,
        subjects=[METRICS_SUBJECTS],
        max_msgs_per_subject=1,
        max_age=METRICS_MAX_AGE_S,
        storage=StorageType.MEMORY,
        discard=DiscardPolicy.OLD,
    )


def pick_container(pod: dict[str, Any], container: str | None) -> str:
    spec = pod.get("spec") or {}
    names = [c.get("name", "") for c in spec.get("containers") or []]
    init_names = [c.get("name", "") for c in spec.get("initContainers") or []]
    name = pod.get("metadata", {}).get("name", "")
    if container is not None:
        if container not in names and container not in init_names:
            raise BadRequest(f"container {container} is not valid for pod {name}")
        return container
    default = (pod.get("metadata", {}).get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION)
    if default in names:
        return default
    if len(names) == 1:
        return names[0]
    raise BadRequest(f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]")


async def locate(nc: NatsClient, namespace: str, pod: str, container: str | None) -> tuple[str, str]:
    """(node name, container name) of a pod's container, through the api service."""
    obj = await ApiClient(nc).get("pods", namespace, pod)
    node = (obj.get("spec") or {}).get("nodeName") or ""
    if not node:
        raise BadRequest(f'pod "{pod}" is not scheduled to a node yet')
    return node, pick_container(obj, container)


def _raise_status(data: bytes, headers: dict[str, str]) -> None:
    status = headers.get(STATUS_HEADER, "200")
    if status.startswith("2"):
        return
    try:
        body = json.loads(data)
    except ValueError:
        body = {"reason": "InternalError", "message": f"node replied {status}"}
    raise from_status(body)


async def stream_logs(
    nc: NatsClient,
    node: str,
    request: dict[str, Any],
    *,
    idle_timeout: float | None = 10.0,  # seconds without any message before giving up; None when following
) -> AsyncIterator[bytes]:
    """Chunks of a container's log from its node, until the node says EOF."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    subject = f"kyb.node.{node}.logs"
    finished = False
    try:
        await nc.publish(subject, json.dumps(request).encode(), reply=inbox)
        first = True
        while True:
            try:
                timeout = 5.0 if first else idle_timeout
                msg = await sub.next_msg(timeout=timeout if timeout is not None else 1e9)
            except nats.errors.TimeoutError:
                if first:
                    raise Temporary(f'node "{node}" did not answer on {subject}') from None
                raise Temporary(f'the log stream from node "{node}" went silent') from None
            headers = dict(msg.headers or {})
            _raise_status(msg.data, headers)
            if headers.get(EOF_HEADER) == "1":
                finished = True
                return
            if msg.data:
                first = False
                yield msg.data
    finally:
        if not finished:
            with contextlib.suppress(Exception):
                await nc.publish(f"kyb.node.{node}.cancel", json.dumps({"inbox": inbox}).encode())
                await nc.flush(timeout=1)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def exec_command(
    nc: NatsClient, node: str, request: dict[str, Any], *, timeout: float = 310.0
) -> tuple[int, str]:
    """Run a command in a container through its node; (exit code, combined output)."""
    subject = f"kyb.node.{node}.exec"
    try:
        msg = await nc.request(subject, json.dumps(request).encode(), timeout=timeout)
    except nats.errors.NoRespondersError:
        raise Temporary(f'node "{node}" does not answer on {subject} (is its kubelet running?)') from None
    except nats.errors.TimeoutError:
        raise Temporary(f'node "{node}" did not answer on {subject} within {timeout:g}s') from None
    _raise_status(msg.data, dict(msg.headers or {}))
    reply = json.loads(msg.data)
    return int(reply["exitCode"]), str(reply.get("output", ""))


async def latest_samples(nc: NatsClient) -> list[dict[str, Any]]:
    """The last metrics sample of every node that published one recently."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(METRICS_STREAM, subjects_filter=METRICS_SUBJECTS)
    except nats.js.errors.NotFoundError:
        raise NotFound("metrics not available yet") from None
    except nats.errors.Error as e:
        raise KybError(f"cannot read {METRICS_STREAM}: {e}") from e
    samples = []
    for subj in sorted((info.state.subjects or {}).keys()):
        try:
            msg = await js.get_last_msg(METRICS_STREAM, subj)
        except nats.js.errors.NotFoundError:
            continue
        samples.append(json.loads(msg.data))
    if not samples:
        raise NotFound("metrics not available yet")
    return samples
