"""metrics.k8s.io/v1beta1, as metrics-server serves it, from the kubelets' samples on the bus.

Each kubelet publishes one sample of its node and pods every ``metrics_interval`` seconds
(``services/kubelet/metrics.py``); the ``KYB_METRICS`` stream keeps the last one per node.
This serves them as NodeMetrics and PodMetrics (get and list, cluster-wide or in a namespace,
``labelSelector`` filtering by the objects' labels as metrics-server does), so ``kubectl top
nodes`` and ``kubectl top pods`` work. CPU is a rate over the sample's window, in nanocores;
memory the working set, in KiB. Pure functions but the lookups ``serve`` awaits.
"""

from __future__ import annotations

from typing import Any

GROUP_VERSION = "metrics.k8s.io/v1beta1"


def _usage(cpu_millis: int, memory_bytes: int) -> dict[str, str]:
    return {"cpu": f"{int(cpu_millis) * 1_000_000}n", "memory": f"{int(memory_bytes) // 1024}Ki"}


def _window(sample: dict[str, Any]) -> str:
    return f"{float(sample.get('window') or 0):g}s"


def node_metrics(sample: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    usage = sample.get("node_usage") or {}
    meta: dict[str, Any] = {"name": sample.get("node", ""), "creationTimestamp": sample.get("timestamp")}
    if labels:
        meta["labels"] = labels
    return {"kind": "NodeMetrics", "apiVersion": GROUP_VERSION, "metadata": meta,
            "timestamp": sample.get("timestamp"), "window": _window(sample),
            "usage": _usage(usage.get("cpu_millis", 0), usage.get("memory_bytes", 0))}


def pod_metrics(sample: dict[str, Any], pod: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": pod.get("name", ""), "namespace": pod.get("namespace", ""),
                            "creationTimestamp": sample.get("timestamp")}
    if labels:
        meta["labels"] = labels
    return {"kind": "PodMetrics", "apiVersion": GROUP_VERSION, "metadata": meta,
            "timestamp": sample.get("timestamp"), "window": _window(sample),
            "containers": [{"name": c.get("name", ""), "usage": _usage(c.get("cpu_millis", 0), c.get("memory_bytes", 0))}
                           for c in pod.get("containers") or []]}


def nodes(samples: list[dict[str, Any]], labels: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """NodeMetrics of every sampled node, by name; with ``labels`` (name -> labels), only those nodes."""
    out = [node_metrics(s, (labels or {}).get(s.get("node", ""))) for s in samples
           if labels is None or s.get("node", "") in labels]
    return sorted(out, key=lambda m: m["metadata"]["name"])


def pods(samples: list[dict[str, Any]], namespace: str | None,
         labels: dict[tuple[str, str], dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """PodMetrics of every sampled pod (in ``namespace`` when given), by namespace and name;
    with ``labels`` ((namespace, name) -> labels), only those pods."""
    out = []
    for sample in samples:
        for pod in sample.get("pods") or []:
            key = (pod.get("namespace", ""), pod.get("name", ""))
            if namespace is not None and key[0] != namespace:
                continue
            if labels is not None and key not in labels:
                continue
            out.append(pod_metrics(sample, pod, (labels or {}).get(key)))
    return sorted(out, key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"]))


def metrics_list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": f"{kind}List", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}
