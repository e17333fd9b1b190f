"""Every kind of the object model, registered with ``schemas.registry`` on import.

The registry imports this module lazily; importing it directly is also fine.
"""

from __future__ import annotations

from schemas import (
                  apiextensions,
                  apps,
                  autoscaling,
                  batch,
                  coordination,
                  core,
                  discovery,
                  events,
                  limitrange,
                  networking,
                  pod,
                  policy,
                  quota,
                  rbac,
                  scheduling,
                  storage,
)
from schemas.registry import KindInfo, register

register(KindInfo("Namespace", ("v1",), "namespaces", core.Namespace, namespaced=False, short_names=("ns",)))
register(KindInfo("Node", ("v1",), "nodes", core.Node, namespaced=False, short_names=("no",)))
register(KindInfo("Pod", ("v1",), "pods", pod.Pod, short_names=("po",)))
register(KindInfo("ReplicationController", ("v1",), "replicationcontrollers", core.ReplicationController,
                  short_names=("rc",)))
register(KindInfo("Service", ("v1",), "services", core.Service, short_names=("svc",)))
register(KindInfo("Endpoints", ("v1",), "endpoints", core.Endpoints, short_names=("ep",)))
register(KindInfo("ConfigMap", ("v1",), "configmaps", core.ConfigMap, short_names=("cm",)))
register(KindInfo("ServiceAccount", ("v1",), "serviceaccounts", core.ServiceAccount, short_names=("sa",)))
register(KindInfo("Secret", ("v1",), "secrets", core.Secret))
register(KindInfo("LimitRange", ("v1",), "limitranges", limitrange.LimitRange, short_names=("limits",)))
register(KindInfo("ResourceQuota", ("v1",), "resourcequotas", quota.ResourceQuota, short_names=("quota",)))
register(KindInfo("PersistentVolume", ("v1",), "persistentvolumes", core.PersistentVolume, namespaced=False,
                  short_names=("pv",)))
register(KindInfo("PersistentVolumeClaim", ("v1",), "persistentvolumeclaims", core.PersistentVolumeClaim,
                  short_names=("pvc",)))
register(KindInfo("Event", ("v1",), "events", events.Event, short_names=("ev",)))
register(KindInfo("ReplicaSet", ("apps/v1",), "replicasets", apps.ReplicaSet, short_names=("rs",)))
register(KindInfo("Deployment", ("apps/v1",), "deployments", apps.Deployment, short_names=("deploy",)))
register(KindInfo("DaemonSet", ("apps/v1",), "daemonsets", apps.DaemonSet, short_names=("ds",)))
register(KindInfo("StatefulSet", ("apps/v1",), "statefulsets", apps.StatefulSet, short_names=("sts",)))
register(KindInfo("ControllerRevision", ("apps/v1",), "controllerrevisions", apps.ControllerRevision))
register(KindInfo("Job", ("batch/v1",), "jobs", batch.Job))
register(KindInfo("CronJob", ("batch/v1",), "cronjobs", batch.CronJob, short_names=("cj",)))
register(KindInfo("HorizontalPodAutoscaler", ("autoscaling/v2", "autoscaling/v1"), "horizontalpodautoscalers",
                  autoscaling.HorizontalPodAutoscaler, short_names=("hpa",)))
register(KindInfo("Ingress", ("networking.k8s.io/v1",), "ingresses", networking.Ingress, short_names=("ing",)))
register(KindInfo("NetworkPolicy", ("networking.k8s.io/v1",), "networkpolicies", networking.NetworkPolicy,
                  short_names=("netpol",)))
register(KindInfo("IngressClass", ("networking.k8s.io/v1",), "ingressclasses", networking.IngressClass,
                  namespaced=False))
register(KindInfo("EndpointSlice", ("discovery.k8s.io/v1",), "endpointslices", discovery.EndpointSlice))
register(KindInfo("StorageClass", ("storage.k8s.io/v1",), "storageclasses", storage.StorageClass,
                  namespaced=False, short_names=("sc",)))
register(KindInfo("PriorityClass", ("scheduling.k8s.io/v1",), "priorityclasses", scheduling.PriorityClass,
                  namespaced=False, short_names=("pc",)))
register(KindInfo("Role", (rbac.API_VERSION,), "roles", rbac.Role))
register(KindInfo("RoleBinding", (rbac.API_VERSION,), "rolebindings", rbac.RoleBinding))
register(KindInfo("ClusterRole", (rbac.API_VERSION,), "clusterroles", rbac.ClusterRole, namespaced=False))
register(KindInfo("ClusterRoleBinding", (rbac.API_VERSION,), "clusterrolebindings", rbac.ClusterRoleBinding,
                  namespaced=False))
register(KindInfo("Lease", ("coordination.k8s.io/v1",), "leases", coordination.Lease))
register(KindInfo("PodDisruptionBudget", ("policy/v1",), "poddisruptionbudgets", policy.PodDisruptionBudget,
                  short_names=("pdb",)))
register(KindInfo("CustomResourceDefinition", (apiextensions.API_VERSION,), "customresourcedefinitions",
                  apiextensions.CustomResourceDefinition, namespaced=False, short_names=("crd", "crds")))
