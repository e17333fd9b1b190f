"""What `kyb get` shows: the kubectl columns of each kind, computed from an object's JSON form.

Pure: every function takes the objects and ``now`` and returns strings, so the columns
(AGE, a pod's STATUS, READY counts) are tested without a cluster or a clock.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Row = list[str]
Columns = tuple[list[str], Callable[[Obj, _dt.datetime], Row]]


def parse_time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


def human_duration(seconds: float) -> str:
    """kubectl's duration.HumanDuration: 5s, 119s, 3m2s, 15m, 4h30m, 30h, 2d5h, 40d, 2y30d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None, now: _dt.datetime) -> str:
    t = parse_time(timestamp)
    if t is None:
        return "<unknown>"
    return human_duration((now - t).total_seconds())


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _age(obj: Obj, now: _dt.datetime) -> str:
    return age(_meta(obj).get("creationTimestamp"), now)


def _n(value: Any) -> str:
    return str(value if value is not None else 0)


def _none(value: str | None) -> str:
    return value if value else "<none>"


# -- pods ------------------------------------------------------------------------------------

def pod_status(pod: Obj) -> str:
    """The STATUS column, computed as kubectl's printPod does."""
    status = _status(pod)
    spec = _spec(pod)
    reason = status.get("reason") or status.get("phase") or "Pending"
    if any(c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated" for c in status.get("conditions") or []):
        reason = "SchedulingGated"
    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    sidecars = _sidecars(spec)
    for i, cs in enumerate(init_statuses):
        if cs.get("name") in sidecars and cs.get("started"):
            continue  # a started sidecar keeps running: the init sequence went past it
        state = cs.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term is not None and term.get("exitCode", 0) == 0:
            continue
        if term is not None:
            if term.get("reason"):
                reason = "Init:" + term["reason"]
            elif term.get("signal"):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{term.get('exitCode', 0)}"
        elif wait is not None and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True"
                      for c in status.get("conditions") or [])
    if not initializing or initialized:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            term, wait = state.get("terminated"), state.get("waiting")
            if wait is not None and wait.get("reason"):
                reason = wait["reason"]
            elif term is not None and term.get("reason"):
                reason = term["reason"]
            elif term is not None:
                reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode', 0)}"
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
        if reason == "Completed" and has_running:
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            reason = "Running" if ready else "NotReady"
    if _meta(pod).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason


def _sidecars(spec: Obj) -> set[str]:
    """The names of the pod's sidecars: init containers with restartPolicy Always."""
    return {c.get("name", "") for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"}


def _sidecar_statuses(pod: Obj) -> list[Obj]:
    sidecars = _sidecars(_spec(pod))
    return [cs for cs in _status(pod).get("initContainerStatuses") or [] if cs.get("name") in sidecars]


def pod_ready(pod: Obj) -> str:
    """READY as kubectl counts it: app containers and sidecars (a sidecar once started)."""
    statuses = _status(pod).get("containerStatuses") or []
    ready = sum(1 for cs in statuses if cs.get("ready"))
    ready += sum(1 for cs in _sidecar_statuses(pod) if cs.get("started") and cs.get("ready"))
    total = len(_spec(pod).get("containers") or []) + len(_sidecars(_spec(pod)))
    return f"{ready}/{total}"


def pod_restarts(pod: Obj, now: _dt.datetime) -> str:
    statuses = [*_sidecar_statuses(pod), *(_status(pod).get("containerStatuses") or [])]
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    last: _dt.datetime | None = None
    for cs in statuses:
        finished = parse_time(((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
        if finished is not None and (last is None or finished > last):
            last = finished
    if restarts and last is not None:
        return f"{restarts} ({human_duration((now - last).total_seconds())} ago)"
    return str(restarts)


def _pod_row(pod: Obj, now: _dt.datetime) -> Row:
    return [pod_ready(pod), pod_status(pod), pod_restarts(pod, now), _age(pod, now)]


def _readiness_gates(pod: Obj) -> str:
    """kubectl's READINESS GATES: how many of the pod's readiness gates have their condition True."""
    gates = _spec(pod).get("readinessGates") or []
    if not gates:
        return "<none>"
    true = {c.get("type") for c in _status(pod).get("conditions") or [] if c.get("status") == "True"}
    return f"{sum(1 for g in gates if g.get('conditionType') in true)}/{len(gates)}"


def _pod_wide(pod: Obj, now: _dt.datetime) -> Row:
    return _pod_row(pod, now) + [
        _none(_status(pod).get("podIP")), _none(_spec(pod).get("nodeName")),
        _none(_status(pod).get("nominatedNodeName")), _readiness_gates(pod),
    ]


# -- workloads -------------------------------------------------------------------------------

def _containers_images_selector(obj: Obj) -> Row:
    pod_spec = (_spec(obj).get("template") or {}).get("spec") or {}
    containers = pod_spec.get("containers") or []
    sel = _spec(obj).get("selector") or {}
    labels = sel.get("matchLabels") if "matchLabels" in sel or "matchExpressions" in sel else sel
    selector = ",".join(f"{k}={v}" for k, v in (labels or {}).items())
    for expr in sel.get("matchExpressions") or []:
        op, key = expr.get("operator"), expr.get("key")
        vals = ",".join(expr.get("values") or [])
        selector += ("," if selector else "") + {
            "In": f"{key} in ({vals})",
            "NotIn": f"{key} notin ({vals})",
            "Exists": f"{key}",
            "DoesNotExist": f"!{key}",
        }.get(op, f"{key} {op}")
    return [
        ",".join(c.get("name", "") for c in containers) or "<none>",
        ",".join(c.get("image", "") for c in containers) or "<none>",
        selector or "<none>",
    ]


def _deployment_row(d: Obj, now: _dt.datetime) -> Row:
    st = _status(d)
    desired = _spec(d).get("replicas", 1)
    return [f"{_n(st.get('readyReplicas'))}/{_n(desired)}", _n(st.get("updatedReplicas")),
            _n(st.get("availableReplicas")), _age(d, now)]


def _replicaset_row(rs: Obj, now: _dt.datetime) -> Row:
    st = _status(rs)
    return [_n(_spec(rs).get("replicas", 1)), _n(st.get("replicas")), _n(st.get("readyReplicas")), _age(rs, now)]


def _daemonset_row(ds: Obj, now: _dt.datetime) -> Row:
    st = _status(ds)
    node_selector = ((_spec(ds).get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    return [_n(st.get("desiredNumberScheduled")), _n(st.get("currentNumberScheduled")), _n(st.get("numberReady")),
            _n(st.get("updatedNumberScheduled")), _n(st.get("numberAvailable")),
            _none(",".join(f"{k}={v}" for k, v in node_selector.items())), _age(ds, now)]


def _statefulset_row(sts: Obj, now: _dt.datetime) -> Row:
    st = _status(sts)
    return [f"{_n(st.get('readyReplicas'))}/{_n(_spec(sts).get('replicas', 1))}", _age(sts, now)]


def _cronjob_row(cj: Obj, now: _dt.datetime) -> Row:
    spec, st = _spec(cj), _status(cj)
    last = st.get("lastScheduleTime")
    return [spec.get("schedule", ""), _none(spec.get("timeZone")), "True" if spec.get("suspend") else "False",
            str(len(st.get("active") or [])), age(last, now) if last else "<none>", _age(cj, now)]


def _job_row(job: Obj, now: _dt.datetime) -> Row:
    spec, st = _spec(job), _status(job)
    succeeded = int(st.get("succeeded") or 0)
    completions = spec.get("completions")
    if completions is not None:
        done = f"{succeeded}/{completions}"
    elif (spec.get("parallelism") or 1) > 1:
        done = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        done = f"{succeeded}/1"
    start, end = parse_time(st.get("startTime")), parse_time(st.get("completionTime"))
    duration = "" if start is None else human_duration(((end or now) - start).total_seconds())
    return [done, duration, _age(job, now)]


# -- services and networking -----------------------------------------------------------------

def service_ports(svc: Obj) -> str:
    parts = []
    for p in _spec(svc).get("ports") or []:
        port = str(p.get("port", ""))
        if p.get("nodePort"):
            port += f":{p['nodePort']}"
        parts.append(f"{port}/{p.get('protocol') or 'TCP'}")
    return ",".join(parts) or "<none>"


def _service_row(svc: Obj, now: _dt.datetime) -> Row:
    spec = _spec(svc)
    kind = spec.get("type") or "ClusterIP"
    external = list(spec.get("externalIPs") or [])
    ingress = (_status(svc).get("loadBalancer") or {}).get("ingress") or []
    external += [i.get("ip") or i.get("hostname") or "" for i in ingress]
    if external:
        ext = ",".join(external)
    elif kind == "LoadBalancer":
        ext = "<pending>"
    elif kind == "ExternalName":
        ext = spec.get("externalName") or "<none>"
    else:
        ext = "<none>"
    return [kind, spec.get("clusterIP") or "<none>", ext, service_ports(svc), _age(svc, now)]


def _endpoints_row(ep: Obj, now: _dt.datetime) -> Row:
    addrs: list[str] = []
    for subset in ep.get("subsets") or []:
        for a in subset.get("addresses") or []:
            for p in subset.get("ports") or [{}]:
                addrs.append(f"{a.get('ip')}:{p['port']}" if "port" in p else str(a.get("ip")))
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [shown or "<none>", _age(ep, now)]


def _ingress_row(ing: Obj, now: _dt.datetime) -> Row:
    spec = _spec(ing)
    hosts = [r.get("host") for r in spec.get("rules") or [] if r.get("host")]
    lb = (_status(ing).get("loadBalancer") or {}).get("ingress") or []
    ports = "80, 443" if spec.get("tls") else "80"
    return [_none(spec.get("ingressClassName")), ",".join(hosts) or "*",
            ",".join(i.get("ip") or i.get("hostname") or "" for i in lb), ports, _age(ing, now)]


# -- cluster ---------------------------------------------------------------------------------

def node_status(node: Obj) -> str:
    ready = next((c for c in _status(node).get("conditions") or [] if c.get("type") == "Ready"), None)
    text = "Ready" if ready is not None and ready.get("status") == "True" else "NotReady"
    if ready is None:
        text = "Unknown"
    if _spec(node).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def node_roles(node: Obj) -> str:
    labels = _meta(node).get("labels") or {}
    roles = sorted(
        {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k}
        | {v for k, v in labels.items() if k == "kubernetes.io/role"}
    )
    return ",".join(r for r in roles if r) or "<none>"


def _node_row(node: Obj, now: _dt.datetime) -> Row:
    info = _status(node).get("nodeInfo") or {}
    return [node_status(node), node_roles(node), _age(node, now), info.get("kubeletVersion") or ""]


def _node_wide(node: Obj, now: _dt.datetime) -> Row:
    info = _status(node).get("nodeInfo") or {}
    addrs = _status(node).get("addresses") or []
    internal = next((a.get("address") for a in addrs if a.get("type") == "InternalIP"), None)
    return _node_row(node, now) + [_none(internal), info.get("osImage") or "<unknown>",
                                   info.get("containerRuntimeVersion") or "<unknown>"]


def _namespace_row(ns: Obj, now: _dt.datetime) -> Row:
    return [_status(ns).get("phase") or "Active", _age(ns, now)]


def _configmap_row(cm: Obj, now: _dt.datetime) -> Row:
    return [str(len(cm.get("data") or {}) + len(cm.get("binaryData") or {})), _age(cm, now)]


def _service_account_row(sa: Obj, now: _dt.datetime) -> Row:
    return [str(len(sa.get("secrets") or [])), _age(sa, now)]


def _secret_row(s: Obj, now: _dt.datetime) -> Row:
    return [s.get("type") or "Opaque", str(len(s.get("data") or {}) + len(s.get("stringData") or {})), _age(s, now)]


_ACCESS = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}


def _modes(modes: list[str] | None) -> str:
    return ",".join(_ACCESS.get(m, m) for m in modes or [])


def _pv_row(pv: Obj, now: _dt.datetime) -> Row:
    spec = _spec(pv)
    ref = spec.get("claimRef") or {}
    claim = f"{ref.get('namespace')}/{ref.get('name')}" if ref else ""
    return [(spec.get("capacity") or {}).get("storage", ""), _modes(spec.get("accessModes")),
            spec.get("persistentVolumeReclaimPolicy") or "Retain", _status(pv).get("phase") or "Pending",
            claim, spec.get("storageClassName") or "", _age(pv, now)]


def _pvc_row(pvc: Obj, now: _dt.datetime) -> Row:
    spec, st = _spec(pvc), _status(pvc)
    return [st.get("phase") or "Pending", spec.get("volumeName") or "",
            (st.get("capacity") or {}).get("storage", ""), _modes(st.get("accessModes")),
            spec.get("storageClassName") or "", _age(pvc, now)]


def _storageclass_row(sc: Obj, now: _dt.datetime) -> Row:
    return [sc.get("provisioner") or "", sc.get("reclaimPolicy") or "Delete", _age(sc, now)]


def _priorityclass_row(pc: Obj, now: _dt.datetime) -> Row:
    return [str(pc.get("value", 0)), "true" if pc.get("globalDefault") else "false", _age(pc, now)]


def _created_at(obj: Obj, _now: _dt.datetime) -> Row:
    """kubectl's CREATED AT of Roles and ClusterRoles: the creation time in RFC 3339, UTC."""
    t = parse_time(_meta(obj).get("creationTimestamp"))
    return [t.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "<unknown>"]


def _binding_row(b: Obj, now: _dt.datetime) -> Row:
    ref = b.get("roleRef") or {}
    return [f"{ref.get('kind', '')}/{ref.get('name', '')}", _age(b, now)]


def _binding_wide(b: Obj, now: _dt.datetime) -> Row:
    """kubectl's USERS, GROUPS, SERVICEACCOUNTS (``namespace/name``) of a binding's subjects."""
    users, groups, accounts = [], [], []
    for s in b.get("subjects") or []:
        kind, name = s.get("kind"), s.get("name", "")
        if kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
        elif kind == "ServiceAccount":
            accounts.append(f"{s['namespace']}/{name}" if s.get("namespace") else name)
    return _binding_row(b, now) + [", ".join(users), ", ".join(groups), ", ".join(accounts)]


def _quota_row(q: Obj, now: _dt.datetime) -> Row:
    """kubectl's REQUEST and LIMIT of a ResourceQuota: ``used/hard`` of each resource in
    status.hard, by name, the ``limits.*`` ones under LIMIT."""
    status = _status(q)
    hard, used = status.get("hard") or {}, status.get("used") or {}
    request: list[str] = []
    limit: list[str] = []
    for name in sorted(hard):
        (limit if name.split(".")[0] == "limits" and "." in name else request).append(
            f"{name}: {used.get(name, '0')}/{hard[name]}")
    return [_age(q, now), ", ".join(request), ", ".join(limit)]


def _hpa_row(hpa: Obj, now: _dt.datetime) -> Row:
    spec, st = _spec(hpa), _status(hpa)
    ref = spec.get("scaleTargetRef") or {}
    target = spec.get("targetCPUUtilizationPercentage")
    for m in spec.get("metrics") or []:
        res = m.get("resource") or {}
        if res.get("name") == "cpu":
            target = (res.get("target") or {}).get("averageUtilization", target)
    current = st.get("currentCPUUtilizationPercentage")
    for m in st.get("currentMetrics") or []:
        res = m.get("resource") or {}
        if res.get("name") == "cpu":
            current = (res.get("current") or {}).get("averageUtilization", current)
    targets = f"cpu: {'<unknown>' if current is None else f'{current}%'}/{target}%" if target is not None else "<none>"
    return [f"{ref.get('kind', '')}/{ref.get('name', '')}", targets, _n(spec.get("minReplicas", 1)),
            _n(spec.get("maxReplicas")), _n(st.get("currentReplicas")), _age(hpa, now)]


def _lease_row(lease: Obj, now: _dt.datetime) -> Row:
    return [_spec(lease).get("holderIdentity") or "", _age(lease, now)]


def event_object(ev: Obj) -> str:
    io = ev.get("involvedObject") or ev.get("regarding") or {}
    return f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}"


def event_last_seen(ev: Obj, now: _dt.datetime) -> str:
    stamp = ev.get("lastTimestamp") or ev.get("eventTime") or _meta(ev).get("creationTimestamp")
    return age(stamp, now)


def _event_row(ev: Obj, now: _dt.datetime) -> Row:
    return [event_last_seen(ev, now), ev.get("type") or "Normal", ev.get("reason") or "",
            event_object(ev), ev.get("message") or ev.get("note") or ""]


def format_label_selector(sel: Obj | None) -> str:
    """metav1.FormatLabelSelector: ``role=db,tier in (a,b)``, ``<none>`` when it selects everything."""
    sel = sel or {}
    parts = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    for expr in sel.get("matchExpressions") or []:
        op, key, vals = expr.get("operator"), expr.get("key"), ",".join(sorted(expr.get("values") or []))
        parts.append({"In": f"{key} in ({vals})", "NotIn": f"{key} notin ({vals})", "Exists": f"{key}",
                      "DoesNotExist": f"!{key}"}.get(op, f"{key} {op}"))
    return ",".join(parts) or "<none>"


def _network_policy_row(np: Obj, now: _dt.datetime) -> Row:
    return [format_label_selector(_spec(np).get("podSelector")), _age(np, now)]


def _pdb_row(pdb: Obj, now: _dt.datetime) -> Row:
    spec, status = _spec(pdb), pdb.get("status") or {}
    return [str(spec["minAvailable"]) if spec.get("minAvailable") is not None else "N/A",
            str(spec["maxUnavailable"]) if spec.get("maxUnavailable") is not None else "N/A",
            str(status.get("disruptionsAllowed", 0)), _age(pdb, now)]


def _generic_row(obj: Obj, now: _dt.datetime) -> Row:
    return [_age(obj, now)]


_COLUMNS: dict[str, Columns] = {
    "Pod": (["READY", "STATUS", "RESTARTS", "AGE"], _pod_row),
    "Deployment": (["READY", "UP-TO-DATE", "AVAILABLE", "AGE"], _deployment_row),
    "ReplicaSet": (["DESIRED", "CURRENT", "READY", "AGE"], _replicaset_row),
    "ReplicationController": (["DESIRED", "CURRENT", "READY", "AGE"], _replicaset_row),
    "DaemonSet": (["DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"], _daemonset_row),
    "StatefulSet": (["READY", "AGE"], _statefulset_row),
    "Job": (["COMPLETIONS", "DURATION", "AGE"], _job_row),
    "CronJob": (["SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"], _cronjob_row),
    "Service": (["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], _service_row),
    "Endpoints": (["ENDPOINTS", "AGE"], _endpoints_row),
    "Ingress": (["CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"], _ingress_row),
    "NetworkPolicy": (["POD-SELECTOR", "AGE"], _network_policy_row),
    "PodDisruptionBudget": (["MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"], _pdb_row),
    "Node": (["STATUS", "ROLES", "AGE", "VERSION"], _node_row),
    "Namespace": (["STATUS", "AGE"], _namespace_row),
    "ConfigMap": (["DATA", "AGE"], _configmap_row),
    "ServiceAccount": (["SECRETS", "AGE"], _service_account_row),
    "Secret": (["TYPE", "DATA", "AGE"], _secret_row),
    "PersistentVolume": (["CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS", "AGE"], _pv_row),
    "PersistentVolumeClaim": (["STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "AGE"], _pvc_row),
    "StorageClass": (["PROVISIONER", "RECLAIMPOLICY", "AGE"], _storageclass_row),
    "PriorityClass": (["VALUE", "GLOBAL-DEFAULT", "AGE"], _priorityclass_row),
    "LimitRange": (["CREATED AT"], _created_at),
    "ResourceQuota": (["AGE", "REQUEST", "LIMIT"], _quota_row),
    "Role": (["CREATED AT"], _created_at),
    "ClusterRole": (["CREATED AT"], _created_at),
    "RoleBinding": (["ROLE", "AGE"], _binding_row),
    "ClusterRoleBinding": (["ROLE", "AGE"], _binding_row),
    "HorizontalPodAutoscaler": (["REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"], _hpa_row),
    "Lease": (["HOLDER", "AGE"], _lease_row),
    "CustomResourceDefinition": (["CREATED AT"], _created_at),
    "Event": (["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], _event_row),
}

_WIDE: dict[str, Columns] = {
    "Pod": (["READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"], _pod_wide),
    "Node": (["STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "OS-IMAGE", "CONTAINER-RUNTIME"], _node_wide),
    "Deployment": (["READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
                   lambda o, now: _deployment_row(o, now) + _containers_images_selector(o)),
    "ReplicaSet": (["DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
                   lambda o, now: _replicaset_row(o, now) + _containers_images_selector(o)),
    "StatefulSet": (["READY", "AGE", "CONTAINERS", "IMAGES"],
                    lambda o, now: _statefulset_row(o, now) + _containers_images_selector(o)[:2]),
    "RoleBinding": (["ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"], _binding_wide),
    "ClusterRoleBinding": (["ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"], _binding_wide),
}


def _custom_cell(value: Any, type_: str, now: _dt.datetime) -> str:
    if value is None:
        return "<none>"
    if type_ == "date" and isinstance(value, str):
        return age(value, now)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _custom_columns(kind: str, wide: bool) -> Columns | None:
    """A custom kind's columns: its CRD's additionalPrinterColumns (priority > 0 only with
    ``wide``), or AGE when it names none, as Kubernetes' table convertor for CRDs has them."""
    from schemas import apiextensions, registry

    try:
        info = registry.by_kind(kind)
    except registry.UnknownKind:
        return None
    if info.custom is None:
        return None
    version = info.custom.version(info.api_version)
    columns = [c for c in version.columns if wide or c.priority == 0]
    if not version.columns:
        return ["AGE"], _generic_row

    def row(obj: Obj, now: _dt.datetime) -> Row:
        return [_custom_cell(apiextensions.cell(c, obj), c.type, now) for c in columns]

    return [c.name.upper() for c in columns], row


def columns_for(kind: str, wide: bool = False) -> Columns:
    if wide and kind in _WIDE:
        return _WIDE[kind]
    if kind in _COLUMNS:
        return _COLUMNS[kind]
    return _custom_columns(kind, wide) or (["AGE"], _generic_row)


def table(
    kind: str, objects: list[Obj], now: _dt.datetime, *, wide: bool = False, all_namespaces: bool = False,
    show_labels: bool = False,
) -> tuple[list[str], list[Row]]:
    """Header and rows of `kyb get KIND` (NAME first, NAMESPACE before it with -A, LABELS last
    with --show-labels)."""
    headers, row = columns_for(kind, wide)
    named = kind != "Event"  # kubectl lists events by what they are about, not by their names
    head = (["NAMESPACE"] if all_namespaces else []) + (["NAME"] if named else []) + list(headers)
    head += ["LABELS"] if show_labels else []
    rows = []
    for obj in objects:
        meta = _meta(obj)
        prefix = [meta.get("namespace") or ""] if all_namespaces else []
        labels = [labels_text(meta.get("labels") or {})] if show_labels else []
        rows.append(prefix + ([meta.get("name", "")] if named else []) + row(obj, now) + labels)
    return head, rows


def labels_text(labels: dict[str, str]) -> str:
    """kubectl's LABELS column: key=value pairs sorted by key, comma-separated; <none>."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels)) or "<none>"


def kind_ref(kind: str, group: str) -> str:
    """``deployment.apps`` / ``pod``: how kubectl names a kind in its one-line messages."""
    return kind.lower() + (f".{group}" if group else "")
