"""Prometheus metrics every service exposes, and the HTTP endpoint that serves them.

The toolkit records them where the work happens, so a service gets them without a line of
its own: the controller loop (reconcile count and latency per controller), the work queue
(depth, adds, retries), the store (KV operation latency, CAS conflicts), the informer (watch
lag: from the JetStream timestamp of a KV write to the informer applying it) and, for nodes
run by a kubelet in this process, pod and container counts.

All metrics live in prometheus-client's default registry (one per process). ``kyb serve NAME
--metrics-port P`` and ``kyb up --metrics-port P`` call :func:`serve` to expose them on
``http://<addr>:P/metrics`` in the text exposition format.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "CONFLICTS",
    "KV_SECONDS",
    "QUEUE_ADDS",
    "QUEUE_DEPTH",
    "QUEUE_RETRIES",
    "RECONCILES",
    "RECONCILE_SECONDS",
    "WATCH_LAG",
    "MetricsServer",
    "POD_COUNTS",
    "PodCounts",
    "serve",
]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RECONCILES = Counter(
    "kyb_reconcile", "Reconciles run, by controller and result (success, requeue, conflict, temporary, error)",
    ["controller", "result"],
)
RECONCILE_SECONDS = Histogram(
    "kyb_reconcile_duration_seconds", "Time one reconcile took, by controller", ["controller"],
    buckets=_LATENCY_BUCKETS,
)
QUEUE_DEPTH = Gauge("kyb_workqueue_depth", "Keys waiting to be handed to a worker, by queue", ["queue"])
QUEUE_ADDS = Counter("kyb_workqueue_adds", "Keys added to the queue (deduplicated adds not counted)", ["queue"])
QUEUE_RETRIES = Counter("kyb_workqueue_retries", "Keys re-added with back-off after a failure", ["queue"])
KV_SECONDS = Histogram(
    "kyb_kv_operation_duration_seconds", "Latency of KV operations, by bucket and operation", ["bucket", "op"],
    buckets=_LATENCY_BUCKETS,
)
CONFLICTS = Counter("kyb_kv_conflicts", "Compare-and-set writes refused because the revision moved", ["bucket", "op"])
WATCH_LAG = Histogram(
    "kyb_informer_watch_lag_seconds",
    "Time from a KV write (its JetStream timestamp) to an informer applying it, by kind",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)


class PodCounts(Collector):
    """``kyb_kubelet_pods`` by node and phase and ``kyb_kubelet_containers`` by node and state,
    counted at scrape time from the sources added: each a function returning pod objects and
    the nodes (of kubelets in this process) whose pods it counts."""

    def __init__(self) -> None:
        self._sources: list[tuple[Callable[[], Iterable[Any]], frozenset[str]]] = []

    def add(self, pods: Callable[[], Iterable[Any]], nodes: Iterable[str]) -> Callable[[], None]:
        source = (pods, frozenset(nodes))
        self._sources.append(source)
        return lambda: self._sources.remove(source)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pods: Tally[tuple[str, str]] = Tally()
        containers: Tally[tuple[str, str]] = Tally()
        for source, nodes in list(self._sources):
            for node in nodes:  # every node shows up, even with nothing on it
                pods[(node, "Running")] += 0
            for pod in source():
                node = getattr(pod.spec, "nodeName", None)
                if node not in nodes:
                    continue
                status = getattr(pod, "status", None)
                pods[(node, getattr(status, "phase", None) or "Pending")] += 1
                for cs in getattr(status, "containerStatuses", None) or ():
                    containers[(node, _container_state(cs))] += 1
        fam = GaugeMetricFamily("kyb_kubelet_pods", "Pods bound to this process's nodes, by phase", labels=["node", "phase"])
        for (node, phase), n in sorted(pods.items()):
            fam.add_metric([node, phase], n)
        yield fam
        fam = GaugeMetricFamily(
            "kyb_kubelet_containers", "Containers of those pods, by state", labels=["node", "state"]
        )
        for (node, state), n in sorted(containers.items()):
            fam.add_metric([node, state], n)
        yield fam


POD_COUNTS = PodCounts()
REGISTRY.register(POD_COUNTS)


def _container_state(cs: Any) -> str:
    state = getattr(cs, "state", None)
    for name in ("running", "waiting", "terminated"):
        if getattr(state, name, None) is not None:
            return name
    return "unknown"


@dataclass
class MetricsServer:
    """The running HTTP endpoint; ``close()`` stops it."""

    host: str
    port: int
    _server: Any
    _thread: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve the process's metrics on ``http://host:port/metrics`` from a background thread
    (port 0 picks a free one)."""
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    return MetricsServer(host=host, port=server.server_address[1], _server=server, _thread=thread)
