"""The api service: answers kyb.api.{apply,create,replace,status,delete,get,list} as queue group
``api`` (run as many replicas as you like). It validates, defaults and writes what users
publish, with compare-and-set, and records an Event for each change.

Header ``Kyb-Dry-Run: All`` on create and replace admits and validates without storing.
Replies: header ``Kyb-Status`` (HTTP-like code) and, for apply, ``Kyb-Result``
(created | configured | unchanged); body = the stored object, or a Status error
``{code, reason, message, details:[{field, message}]}`` in the same shape for every verb.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from opentelemetry.trace import SpanKind

from kyb import bus, errors, pki, satoken, telemetry
from kyb.customkinds import CRD_KIND, CustomKinds
from kyb.informer import Informer
from kyb.render import to_dict
from kyb.serve import ServiceContext
from kyb.store import Store, kind_info
from schemas import limits
from schemas.authentication import TokenQuery
from schemas.bootstrappolicy import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES
from schemas.defaults import DEFAULT_SERVICE_ACCOUNT
from schemas.helpers import format_time
from schemas.limitrange import keep_defaults
from schemas.meta import Object
from schemas.pod import Pod
from schemas.registry import KindInfo, all_kinds, by_kind
from schemas.scheduling import SYSTEM_PRIORITY_CLASSES, PriorityClass, global_default, keep_priority
from schemas.serviceaccount import ROOT_CA_CONFIGMAP
from services.api import admission, budget, crds, defaultclass, noderestriction
from services.api.allocator import Allocator, Ranges, held_keys, owner_of

log = structlog.get_logger("api")
_S = TypeVar("_S")

SUBJECT_PREFIX = "kyb.api."
QUEUE = "api"

BOOT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
ROOT_CA_DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
                       "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
                       "guaranteed across distributions of Kubernetes clusters.")

_encoder = msgspec.json.Encoder()
LIST_BYTES = 1024 * 1024  # the most a list reply holds; less when the server's max_payload is lower
REPLY_HEADROOM = 4096  # of max_payload, for the reply's headers


class Query(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    namespace: str | None = None
    name: str | None = None
    labelSelector: str | None = None
    fieldSelector: str | None = None
    propagationPolicy: str | None = None
    resourceVersion: str | None = None
    gracePeriodSeconds: int | None = None
    limit: int | None = None  # list: at most this many items (and a continue token for the rest)
    continue_: str | None = msgspec.field(default=None, name="continue")  # list: the token of the page before


class Api:
    """The verbs, over a Store and a namespace cache."""

    def __init__(
        self,
        store: Store,
        namespaces: Informer | None,
        *,
        nc: Any = None,
        source: str = "api",
        allocator: Allocator | None = None,
        token_key: ec.EllipticCurvePrivateKey | None = None,  # signs service account tokens; None: none issued
        root_ca: str | None = None,  # the apiserver's CA (PEM), published as kube-root-ca.crt; None: not
        kinds: CustomKinds | None = None,  # the custom kinds this process serves (CRDs)
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.store = store
        self.token_key = token_key
        self.root_ca = root_ca
        self.clock = clock
        self.allocator = allocator or Allocator(store.js)
        self.namespaces = namespaces
        self.nc = nc
        self.source = source
        self.kinds = kinds
        self.crds = crds.Crds(store, kinds) if kinds is not None else None
        self._ns_tasks: dict[str, asyncio.Task] = {}
        self._closing = False

    # -- helpers --------------------------------------------------------------------------

    async def _check_namespace(self, info: KindInfo, obj: Object) -> None:
        if not info.namespaced:
            return
        ns = obj.metadata.namespace or "default"
        current = None
        if self.namespaces is not None:
            current = self.namespaces.get(f"_.{ns}")
        if current is None:
            try:
                current = await self.store.get("Namespace", None, ns)
            except errors.NotFound:
                raise errors.NotFound(
                    f'namespaces "{ns}" not found', [errors.FieldError("metadata.namespace", f'namespace "{ns}" does not exist')]
                ) from None
        if current.metadata.deletionTimestamp:
            raise errors.Forbidden(
                f'unable to create new content in namespace {ns} because it is being terminated',
                [errors.FieldError("metadata.namespace", "namespace is being terminated")],
            )

    async def _default_class(self, info: KindInfo, obj: Object) -> Object:
        """Kubernetes' DefaultStorageClass and DefaultIngressClass admission: a new claim or
        Ingress that names no class gets the default class's name."""
        class_kind = defaultclass.CLASS_KIND.get(info.kind)
        if class_kind is None or not defaultclass.names_no_class(obj):
            return obj
        return defaultclass.with_class(obj, await self.store.list(class_kind))

    async def _one_global_default(self, obj: Object) -> None:
        """Kubernetes' Priority admission of a PriorityClass: only one may be globalDefault."""
        if not isinstance(obj, PriorityClass) or not obj.globalDefault:
            return
        others = [c for c in await self.store.list("PriorityClass")
                  if isinstance(c, PriorityClass) and c.metadata.name != obj.metadata.name]
        marked = global_default(others)
        if marked is not None:
            message = f"PriorityClass {marked.metadata.name} is already marked as default. Only one default can exist"
            raise errors.Forbidden(f'priorityclasses.scheduling.k8s.io "{obj.metadata.name}" is forbidden: {message}',
                                   [errors.FieldError("globalDefault", message)])

    async def _admit(self, body: bytes, namespace: str) -> budget.Admitted:
        """The manifest admitted; a kind this process does not know is looked up afresh among
        the CustomResourceDefinitions (one made a moment ago through another replica) first."""
        try:
            return await budget.admit(body, namespace)
        except admission.UnknownKindRequest:
            if self.kinds is None:
                raise
            await self.kinds.refresh()
        return await budget.admit(body, namespace)

    async def _kind(self, kind: str) -> KindInfo:
        """The kind a query names (looked up afresh among the CRDs when unknown, as ``_admit``)."""
        try:
            return kind_info(kind)
        except errors.BadRequest:
            if self.kinds is None:
                raise
            await self.kinds.refresh()
        return kind_info(kind)

    async def _create(self, info: KindInfo, obj: Object) -> Object:
        if not crds.keeps_status(info, obj.apiVersion):
            obj = admission.fresh_status(obj)
        obj = await self._default_class(info, obj)
        await self._one_global_default(obj)
        if self.crds is not None:
            if info.kind == CRD_KIND:
                created = await self.store.create(self.crds.prepared(obj))
                await self.crds.serve(created)
                return created
            if info.custom is not None:
                self.crds.check_open(info)
        if info.kind == "Namespace":
            created = await self.store.create(obj)
            await self._default_service_account(created.metadata.name)
            return created
        if info.kind != "Service":
            return await self.store.create(obj)
        obj, claimed = await self.allocator.assign(obj, None)
        try:
            return await self.store.create(obj)
        except BaseException:
            await self.allocator.release_keys(claimed, owner_of(obj))
            raise

    async def _update(self, info: KindInfo, new: Object, current: Object) -> Object | None:
        """Write ``new`` over ``current``; None when it would change nothing."""
        if isinstance(new, Pod) and isinstance(current, Pod):
            new = keep_defaults(keep_priority(new, current), current)
        admission.check_update(new, current)
        await self._one_global_default(new)
        claimed: set[str] = set()
        if info.kind == "Service":
            new, claimed = await self.allocator.assign(new, current)
        if info.kind == CRD_KIND and self.crds is not None:
            new = self.crds.prepared(new, current)
        if admission.same_content(new, current):
            return None
        try:
            updated = await self.store.update(new, current=current)
        except BaseException:
            if claimed:
                await self.allocator.release_keys(claimed, owner_of(new))
            raise
        if info.kind == CRD_KIND and self.crds is not None:
            await self.crds.serve(updated)
        if info.kind == "Service":
            await self.allocator.release_keys(held_keys(current) - held_keys(updated), owner_of(updated))
        return updated

    async def _event(self, obj: Object, reason: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.store.record_event(obj, reason, message, source=self.source, nc=self.nc)

    # -- verbs ----------------------------------------------------------------------------

    async def apply(self, body: bytes, namespace: str) -> tuple[Object, str]:
        doc, info, desired = await self._admit(body, namespace)
        desired = admission.with_last_applied(desired, doc)
        if not desired.metadata.name:
            raise errors.Invalid("name is required for apply", [errors.FieldError("metadata.name", "Required value")])
        await self._check_namespace(info, desired)
        # Optimistic create first: one round trip for what is new, the merge path otherwise.
        try:
            created = await self._create(info, desired)
        except errors.AlreadyExists:
            pass
        else:
            await self._event(created, "Created", f"{info.kind} {created.metadata.name} created")
            return created, "created"
        for _ in range(10):
            try:
                current = await self.store.get(info, desired.metadata.namespace, desired.metadata.name)
            except errors.NotFound:
                try:
                    created = await self._create(info, desired)
                except errors.AlreadyExists:
                    continue  # raced with another writer: merge onto theirs
                await self._event(created, "Created", f"{info.kind} {created.metadata.name} created")
                return created, "created"
            if current.metadata.deletionTimestamp:
                raise errors.Conflict(
                    f'{info.plural} "{current.metadata.name}" is being deleted; apply again once it is gone'
                )
            merged = admission.merge_apply(current, desired, doc)
            try:
                updated = await self._update(info, merged, current)
            except errors.Conflict:
                continue  # re-read, re-merge
            if updated is None:
                return current, "unchanged"
            await self._event(updated, "Updated", f"{info.kind} {updated.metadata.name} configured")
            return updated, "configured"
        raise errors.Conflict(f'{info.plural} "{desired.metadata.name}": too many concurrent writers, try again')

    async def create(self, body: bytes, namespace: str, dry_run: bool = False) -> Object:
        _, info, desired = await self._admit(body, namespace)
        if not desired.metadata.name and not desired.metadata.generateName:
            raise errors.Invalid("name or generateName is required", [errors.FieldError("metadata.name", "Required value")])
        await self._check_namespace(info, desired)
        if dry_run:  # admitted and validated, not stored
            obj = await self._default_class(info, admission.fresh_status(desired))
            return await self.store.admit_pod(obj) if isinstance(obj, Pod) else obj
        created = await self._create(info, desired)
        await self._event(created, "Created", f"{info.kind} {created.metadata.name} created")
        return created

    async def _read_for_replace(self, body: bytes, namespace: str) -> tuple[KindInfo, Object, Object]:
        """(kind, the desired object, the stored one), or Conflict when the body names a
        resourceVersion that is not the stored one (a PUT's precondition)."""
        _, info, desired = await self._admit(body, namespace)
        current = await self.store.get(info, desired.metadata.namespace, desired.metadata.name)
        rv = desired.metadata.resourceVersion
        if rv is not None and rv != current.metadata.resourceVersion:
            raise errors.Conflict(
                f'Operation cannot be fulfilled on {info.plural} "{desired.metadata.name}": the object has been '
                "modified; please apply your changes to the latest version and try again"
            )
        return info, desired, current

    async def replace(self, body: bytes, namespace: str, dry_run: bool = False) -> Object:
        info, desired, current = await self._read_for_replace(body, namespace)
        new = admission.replace_onto(current, desired)
        if crds.keeps_status(info, desired.apiVersion):
            new = msgspec.structs.replace(new, status=getattr(desired, "status", msgspec.UNSET))
        if dry_run:
            return new
        updated = await self._update(info, new, current)
        if updated is None:
            return current
        await self._event(updated, "Updated", f"{info.kind} {updated.metadata.name} replaced")
        return updated

    async def replace_status(self, body: bytes, namespace: str, dry_run: bool = False) -> Object:
        """`status` (the status subresource): the body's status, everything else as stored."""
        info, desired, current = await self._read_for_replace(body, namespace)
        if not crds.has_status(info, desired.apiVersion):
            raise errors.NotFound(f"{info.plural} have no status")
        new = msgspec.structs.replace(current, status=desired.status)
        if dry_run:
            return new
        return await self._update(info, new, current) or current

    async def get(self, q: Query) -> Object:
        info = await self._kind(q.kind)
        if not q.name:
            raise errors.BadRequest("get needs a name", [errors.FieldError("name", "Required value")])
        return await self.store.get(info, q.namespace or "default", q.name)

    async def list(self, q: Query) -> list[Object]:
        from schemas.selector import parse, parse_fields

        info = await self._kind(q.kind)
        selector = _selector(parse, q.labelSelector, "label", "labelSelector") if q.labelSelector else None
        items = await self.store.list(info, q.namespace if info.namespaced else None, selector)
        if q.fieldSelector:
            fields = _selector(parse_fields, q.fieldSelector, "field", "fieldSelector")
            items = [o for o in items if fields.matches(o)]
        if q.continue_:  # the next page: what sorts after the last item of the one before
            after = after_token(q.continue_)
            items = [o for o in items if (o.metadata.namespace or "", o.metadata.name) > after]
        return items

    async def delete(self, q: Query) -> Object:
        info = await self._kind(q.kind)
        if not q.name:
            raise errors.BadRequest("delete needs a name", [errors.FieldError("name", "Required value")])
        policy = q.propagationPolicy or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise errors.BadRequest(
                f'propagationPolicy must be Background, Foreground or Orphan, not "{policy}"',
                [errors.FieldError("propagationPolicy", "Unsupported value")],
            )
        if info.kind == "Namespace" and q.name in BOOT_NAMESPACES:
            raise errors.Forbidden(f'namespaces "{q.name}" is forbidden: this namespace may not be deleted')
        finalizers: tuple[str, ...] = ()
        if policy == "Foreground":
            finalizers = ("foregroundDeletion",)
        elif policy == "Orphan":
            finalizers = ("orphan",)
        if info.kind == "Namespace":
            finalizers = ("kubernetes",)
        deleted = await self.store.delete(
            info,
            q.namespace or "default",
            q.name,
            resource_version=q.resourceVersion,
            grace_period_seconds=q.gracePeriodSeconds,
            add_finalizers=finalizers,
        )
        await self._event(deleted, "Deleted", f"{info.kind} {q.name} deleted")
        if info.kind == "Service" and not deleted.metadata.deletionTimestamp:
            await self.allocator.release(deleted)
        if info.kind == "Namespace":
            self.finish_namespace(q.name)
        if info.kind == CRD_KIND and self.crds is not None and deleted.metadata.deletionTimestamp:
            self.crds.finish(q.name)
        return deleted

    async def evict(self, q: Query) -> Object:
        """pods/eviction: delete the pod (as ``delete`` does, with its options) unless that
        would break the PodDisruptionBudget selecting it; a disruption is taken from the budget
        first, with CAS, so two concurrent evictions never both take the last one."""
        from schemas.helpers import pod_is_terminal
        from schemas.pod import Pod
        from schemas.policy import PodDisruptionBudget, eviction_verdict, selects, taken

        if kind_info(q.kind).kind != "Pod":
            raise errors.BadRequest(f"only pods can be evicted, not {q.kind}", [errors.FieldError("kind", "Unsupported value")])
        if not q.name:
            raise errors.BadRequest("evict needs a name", [errors.FieldError("name", "Required value")])
        ns = q.namespace or "default"
        pod = await self.store.get("Pod", ns, q.name)
        assert isinstance(pod, Pod)
        if pod_is_terminal(pod) or pod.metadata.deletionTimestamp:
            return await self.delete(q)  # nothing left to disrupt
        budgets = [b for b in await self.store.list("PodDisruptionBudget", ns)
                   if isinstance(b, PodDisruptionBudget) and selects(b, pod)]
        if len(budgets) > 1:
            raise errors.Permanent("This pod has more than one PodDisruptionBudget, which the eviction subresource "
                                   "does not support.")
        if budgets:
            def take(pdb: Object) -> Object | None:
                assert isinstance(pdb, PodDisruptionBudget) and isinstance(pod, Pod)
                verdict = eviction_verdict(pdb, pod)
                if not verdict.allow:
                    details = [errors.FieldError("DisruptionBudget", verdict.cause)] if verdict.cause else []
                    if verdict.code == 429:
                        raise errors.TooManyRequests(verdict.message, 10.0, details)
                    raise errors.Forbidden(verdict.message, details)
                if not verdict.take:
                    return None  # an unhealthy pod the policy lets go: the budget stays as it is
                after = taken(pdb, pod.metadata.name, self.store.clock())
                assert after is not None  # the verdict took one, so one was left
                return after

            await self.store.mutate("PodDisruptionBudget", ns, budgets[0].metadata.name, take)
        return await self.delete(q)

    # -- namespace deletion ----------------------------------------------------------------

    def finish_namespace(self, name: str) -> None:
        """Delete everything in a terminating namespace, then the namespace itself."""
        task = self._ns_tasks.get(name)
        if task is None or task.done():
            self._ns_tasks[name] = asyncio.create_task(self._empty_namespace(name), name=f"ns-delete-{name}")

    async def _empty_namespace(self, name: str) -> None:
        delay = 0.1
        while not self._closing:
            remaining = 0
            for info in all_kinds():
                if not info.namespaced:
                    continue
                for obj in await self.store.list(info, name):
                    remaining += 1
                    if obj.metadata.deletionTimestamp:
                        continue
                    with contextlib.suppress(errors.NotFound, errors.Conflict):
                        await self.store.delete(info, name, obj.metadata.name)
            if remaining == 0:
                break
            # A cancellation swallowed inside a library's wait_for must still end this loop.
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        if self._closing:
            return  # the next api to start finishes the job

        def drop(ns: Object) -> Object:
            fins = [f for f in ns.metadata.finalizers if f != "kubernetes"]
            return msgspec.structs.replace(ns, metadata=msgspec.structs.replace(ns.metadata, finalizers=fins))

        with contextlib.suppress(errors.NotFound):
            await self.store.mutate("Namespace", None, name, drop)

    async def ensure_namespaces(self) -> None:
        ns_type = by_kind("Namespace").type
        for name in BOOT_NAMESPACES:
            obj = msgspec.convert({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, ns_type)
            with contextlib.suppress(errors.AlreadyExists):
                await self.store.create(obj)
        # one listing, not a create per namespace at every start
        accounted = {sa.metadata.namespace for sa in await self.store.list("ServiceAccount")
                     if sa.metadata.name == DEFAULT_SERVICE_ACCOUNT}
        published = set()
        if self.root_ca is not None:
            published = {cm.metadata.namespace for cm in await self.store.list("ConfigMap")
                         if cm.metadata.name == ROOT_CA_CONFIGMAP}
        for ns in await self.store.list("Namespace"):
            if ns.metadata.deletionTimestamp:
                self.finish_namespace(ns.metadata.name)
                continue
            if ns.metadata.name not in accounted:  # namespaces made before ServiceAccounts were served
                await self._default_service_account(ns.metadata.name)
            elif ns.metadata.name not in published:
                await self._root_ca_configmap(ns.metadata.name)

    async def token_request(self, node: str, req: noderestriction.NodeRequest) -> dict[str, Any]:
        """A node's TokenRequest for one of its pods (authentication.k8s.io/v1), signed with the
        service account key; NotFound when the api has none, or the pod's account is missing."""
        pod = await self.store.get("Pod", req.namespace, req.name)
        binding = noderestriction.token_binding(node, pod, req)
        audiences = [req.audience] if req.audience else list(satoken.API_AUDIENCES)
        return await self._token(binding, audiences, req.expirationSeconds, pod)

    async def service_account_token(self, q: TokenQuery) -> dict[str, Any]:
        """A TokenRequest for ServiceAccount ``name`` (``serviceaccounts/<name>/token``, what
        ``kubectl create token`` asks), optionally bound to a Pod of its namespace, validated
        and defaulted as Kubernetes does (an hour unless asked; at least 10 minutes)."""
        namespace, name, spec = q.namespace, q.name, q.spec
        seconds = 3600 if spec.expirationSeconds is None else spec.expirationSeconds
        problem = ("may not specify a duration less than 10 minutes" if seconds < noderestriction.MIN_TOKEN_SECONDS
                   else "may not specify a duration larger than 2^32 seconds" if seconds > 2**32 else "")
        if problem:
            raise errors.Invalid(f'TokenRequest.authentication.k8s.io "{name}" is invalid: spec.expirationSeconds: '
                                 f"Invalid value: {seconds}: {problem}",
                                 [errors.FieldError("spec.expirationSeconds", f"Invalid value: {seconds}: {problem}")])
        binding = satoken.Binding(namespace=namespace, service_account=name)
        pod = None
        ref = spec.boundObjectRef
        if ref is not None:
            if ref.kind != "Pod" or ref.apiVersion not in ("", "v1"):
                message = f'Unsupported value: "{ref.kind}": supported values: "Pod"'
                raise errors.Invalid(f'TokenRequest.authentication.k8s.io "{name}" is invalid: '
                                     f"spec.boundObjectRef.kind: {message}",
                                     [errors.FieldError("spec.boundObjectRef.kind", message)])
            pod = await self.store.get("Pod", namespace, ref.name)
            assert isinstance(pod, Pod)
            if ref.uid and ref.uid != pod.metadata.uid:
                raise errors.Conflict(f'Operation cannot be fulfilled on pods "{ref.name}": the UID in the bound '
                                      f"object reference ({ref.uid}) does not match the UID in record. The object "
                                      "might have been deleted and then recreated")
            binding = dataclasses.replace(binding, pod=pod.metadata.name, pod_uid=pod.metadata.uid or "",
                                          node=pod.spec.nodeName or "")
        return await self._token(binding, list(spec.audiences or satoken.API_AUDIENCES), seconds, pod)

    async def _token(self, binding: satoken.Binding, audiences: list[str], seconds: int, pod: Pod | None
                     ) -> dict[str, Any]:
        """A signed TokenRequest for ``binding``'s service account, which must exist."""
        if self.token_key is None:
            raise errors.NotFound("service account tokens are not issued: the api has no service account key "
                                  "(option service_account_key_file)")
        account = await self.store.get("ServiceAccount", binding.namespace, binding.service_account)
        binding = dataclasses.replace(binding, service_account_uid=account.metadata.uid or "")
        token, expires = satoken.issue(self.token_key, binding, audiences=audiences, expiration_seconds=seconds,
                                       now=self.clock())
        spec: dict[str, Any] = {"audiences": audiences, "expirationSeconds": seconds}
        if pod is not None:
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name,
                                      "uid": pod.metadata.uid}
        return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "metadata": {"name": binding.service_account, "namespace": binding.namespace,
                             "creationTimestamp": None},
                "spec": spec, "status": {"token": token, "expirationTimestamp": format_time(expires)}}

    async def ensure_rbac_defaults(self) -> None:
        """The ClusterRoles and ClusterRoleBindings Kubernetes bootstraps (schemas.bootstrappolicy),
        those missing made, as Kubernetes' apiserver makes them at start (one it finds is left as
        it is: an administrator's changes stay)."""
        for kind, objects in (("ClusterRole", CLUSTER_ROLES), ("ClusterRoleBinding", CLUSTER_ROLE_BINDINGS)):
            have = {o.metadata.name for o in await self.store.list(kind)}
            for obj in objects:
                if obj.metadata.name not in have:
                    with contextlib.suppress(errors.AlreadyExists):
                        await self.store.create(obj)

    async def ensure_system_priority_classes(self) -> None:
        """``system-node-critical`` and ``system-cluster-critical``, as Kubernetes' apiserver
        makes them at start (one it finds is left as it is)."""
        have = {c.metadata.name for c in await self.store.list("PriorityClass")}
        for pc in SYSTEM_PRIORITY_CLASSES:
            if pc.metadata.name not in have:
                with contextlib.suppress(errors.AlreadyExists):
                    await self.store.create(pc)

    async def _default_service_account(self, namespace: str) -> None:
        """The ``default`` ServiceAccount of a new namespace, as Kubernetes' serviceaccounts
        controller makes it (pods that name none run as it)."""
        sa = msgspec.convert(
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": namespace}},
            by_kind("ServiceAccount").type,
        )
        with contextlib.suppress(errors.AlreadyExists):
            await self.store.create(sa)
        await self._root_ca_configmap(namespace)

    async def _root_ca_configmap(self, namespace: str) -> None:
        """ConfigMap ``kube-root-ca.crt`` (``ca.crt``: the apiserver's CA) in a namespace, as
        Kubernetes' root CA publisher makes it, for the ``kube-api-access-*`` projected volumes
        of manifests written by Kubernetes and for in-cluster clients."""
        if self.root_ca is None:
            return
        cm = msgspec.convert(
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": namespace,
                          "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
             "data": {"ca.crt": self.root_ca}},
            by_kind("ConfigMap").type,
        )
        with contextlib.suppress(errors.AlreadyExists, errors.Forbidden):  # Forbidden: a full quota
            await self.store.create(cm)

    async def close(self) -> None:
        self._closing = True
        if self.crds is not None:
            await self.crds.close()
        for t in self._ns_tasks.values():
            t.cancel()
        await asyncio.gather(*self._ns_tasks.values(), return_exceptions=True)


# -- the NATS shell --------------------------------------------------------------------------


def continue_token(obj: Object) -> str:
    """What a list's next page starts after: the last item's namespace and name."""
    key = msgspec.json.encode([obj.metadata.namespace or "", obj.metadata.name])
    return base64.urlsafe_b64encode(key).decode()


def after_token(token: str) -> tuple[str, str]:
    """The (namespace, name) a continue token names; BadRequest naming ``continue`` otherwise."""
    try:
        ns, name = msgspec.json.decode(base64.urlsafe_b64decode(token.encode()), type=tuple[str, str])
    except (ValueError, msgspec.DecodeError, binascii.Error):
        raise errors.BadRequest("the continue token is not valid", [errors.FieldError(
            "continue", "Invalid value: the token of a list's metadata.continue")]) from None
    return ns, name


def list_reply(items: list[Object], limit: int | None, max_bytes: int) -> bytes:
    """A List of ``items`` (sorted by namespace and name), cut after ``limit`` items or where
    the next would pass ``max_bytes`` (a NATS message has a size limit); a cut list's metadata
    has ``continue`` (send it back as the query's ``continue``) and ``remainingItemCount``."""
    head = b'{"apiVersion":"v1","kind":"List","metadata":'
    encoded: list[bytes] = []
    size = len(head) + 200  # the metadata and the brackets
    for obj in items[:limit] if limit else items:
        one = _encoder.encode(to_dict(obj))
        if encoded and size + len(one) + 1 > max_bytes:
            break
        encoded.append(one)
        size += len(one) + 1
    meta: dict[str, Any] = {}
    if len(encoded) < len(items):
        meta = {"continue": continue_token(items[len(encoded) - 1]), "remainingItemCount": len(items) - len(encoded)}
    return head + _encoder.encode(meta) + b',"items":[' + b",".join(encoded) + b"]}"


def _selector(parse: Callable[[str], _S], text: str, what: str, field: str) -> _S:
    """``parse(text)``, or the BadRequest a query with a malformed selector answers."""
    from schemas.selector import SelectorError

    try:
        return parse(text)
    except (SelectorError, ValueError) as e:
        raise errors.BadRequest(f"invalid {what} selector: {e}", [errors.FieldError(field, str(e))]) from None


def _reply_headers(code: int, result: str | None = None) -> dict[str, str]:
    headers = {"Kyb-Status": str(code)}
    if result:
        headers["Kyb-Result"] = result
    return headers


async def handle(api: Api, verb: str, body: bytes, headers: dict[str, str],
                 max_bytes: int = LIST_BYTES) -> tuple[bytes, dict[str, str]]:
    """One request, one reply (body, headers) of at most ``max_bytes`` for a list; every
    failure becomes a Status."""
    namespace = headers.get("Kyb-Namespace") or "default"
    dry_run = headers.get("Kyb-Dry-Run") == "All"  # create and replace: validate, do not store
    try:
        if verb == "apply":
            obj, result = await api.apply(body, namespace)
            return _encoder.encode(to_dict(obj)), _reply_headers(201 if result == "created" else 200, result)
        if verb == "create":
            return _encoder.encode(to_dict(await api.create(body, namespace, dry_run))), _reply_headers(201)
        if verb == "replace":
            return _encoder.encode(to_dict(await api.replace(body, namespace, dry_run))), _reply_headers(200)
        if verb == "status":
            return _encoder.encode(to_dict(await api.replace_status(body, namespace, dry_run))), _reply_headers(200)
        if verb == "token":
            try:
                token_query = limits.decode_json(body, type=TokenQuery, what="token request")
            except limits.InputError as e:
                raise admission.from_limit(e) from None
            return _encoder.encode(await api.service_account_token(token_query)), _reply_headers(201)
        try:
            q = limits.decode_json(body, type=Query, what="query")
        except limits.InputError as e:
            raise admission.from_limit(e) from None
        if verb == "get":
            return _encoder.encode(to_dict(await api.get(q))), _reply_headers(200)
        if verb == "list":
            return list_reply(await api.list(q), q.limit, max_bytes), _reply_headers(200)
        if verb == "delete":
            return _encoder.encode(to_dict(await api.delete(q))), _reply_headers(200)
        if verb == "evict":
            return _encoder.encode(to_dict(await api.evict(q))), _reply_headers(200)
        raise errors.NotFound(f'unknown verb "{verb}": use apply, create, replace, status, get, list, delete, evict or token')
    except errors.KybError as e:
        return _encoder.encode(e.to_status()), _reply_headers(e.code)
    except Exception as e:  # a bug: still one reply in the one shape
        log.exception("api request failed", verb=verb)
        err = errors.Permanent(f"internal error: {type(e).__name__}: {e}")
        return _encoder.encode(err.to_status()), _reply_headers(err.code)


async def handle_node(api: Api, node: str, verb: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    """A kubelet's request on kyb.api.node.<node>.<verb> (see services/api/noderestriction.py)."""
    try:
        try:
            req = limits.decode_json(body, type=noderestriction.NodeRequest, what="node request")
        except limits.InputError as e:
            raise admission.from_limit(e) from None
        store = api.store
        if verb == "status":
            updated = await store.mutate("Pod", req.namespace, req.name, lambda p: noderestriction.with_status(node, p, req))
            return _encoder.encode(to_dict(updated)), _reply_headers(200)
        if verb == "delete":
            pod = await store.get("Pod", req.namespace, req.name)
            noderestriction.check_delete(node, pod, req)
            deleted = await store.delete(
                "Pod", req.namespace, req.name, resource_version=req.resourceVersion or pod.metadata.resourceVersion,
                grace_period_seconds=0,
            )
            return _encoder.encode(to_dict(deleted)), _reply_headers(200)
        if verb == "secret":
            pods = await store.list("Pod", req.namespace)
            noderestriction.check_secret(node, req.namespace, req.name, pods)
            return _encoder.encode(to_dict(await store.get("Secret", req.namespace, req.name))), _reply_headers(200)
        if verb == "token":
            return _encoder.encode(await api.token_request(node, req)), _reply_headers(201)
        raise errors.NotFound(f'unknown node verb "{verb}": use {", ".join(noderestriction.NODE_VERBS)}')
    except errors.KybError as e:
        return _encoder.encode(e.to_status()), _reply_headers(e.code)
    except Exception as e:
        log.exception("node request failed", verb=verb, node=node)
        err = errors.Permanent(f"internal error: {type(e).__name__}: {e}")
        return _encoder.encode(err.to_status()), _reply_headers(err.code)


def _sample_ratio(raw: Any) -> float:
    try:
        ratio = float(raw)
    except (TypeError, ValueError):
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"trace_sample_ratio (KYB_TRACE_SAMPLE_RATIO) must be a number from 0 to 1, not {raw!r}")
    return ratio


def service_account_key(options: dict[str, Any]) -> ec.EllipticCurvePrivateKey | None:
    """The key that signs service account tokens: option ``service_account_key_file`` (it must
    exist), else ``<data_dir>/apiserver/sa.key`` (made when missing, as the apiserver does);
    None, and no tokens issued, without either."""
    path = options.get("service_account_key_file") or os.environ.get("KYB_SERVICE_ACCOUNT_KEY_FILE")
    if path:
        if not Path(str(path)).exists():
            log.warning("service account key file missing: service account tokens are not issued", path=str(path))
            return None
        return satoken.load_key(Path(str(path)))
    if options.get("data_dir"):
        return satoken.ensure_key(pki.ApiserverFiles.under(Path(str(options["data_dir"])).expanduser()).sa_key)
    log.info("no service account key (options data_dir, service_account_key_file): service account tokens "
             "are not issued")
    return None


def root_ca(options: dict[str, Any]) -> str | None:
    """The apiserver's CA certificate (PEM) under ``data_dir``, when there is one."""
    if not options.get("data_dir"):
        return None
    ca = pki.ApiserverFiles.under(Path(str(options["data_dir"])).expanduser()).ca_cert
    return ca.read_text() if ca.exists() else None


async def run(ctx: ServiceContext, stop: asyncio.Event) -> None:
    namespaces = Informer(ctx.nc, "Namespace")
    await namespaces.start()
    allocator = Allocator(ctx.js, Ranges.from_options(ctx.options), replicas=ctx.store.replicas)
    kinds = CustomKinds(ctx.store, ctx.nc)
    await kinds.start()
    api = Api(ctx.store, namespaces, nc=ctx.nc, source="api", allocator=allocator,
              token_key=service_account_key(ctx.options), root_ca=root_ca(ctx.options), kinds=kinds)
    await api.ensure_namespaces()
    if api.crds is not None:
        await api.crds.resume()
    await api.ensure_system_priority_classes()
    await api.ensure_rbac_defaults()
    await namespaces.wait_synced(30)
    limit = asyncio.Semaphore(int(ctx.options.get("api_concurrency", 256)))
    # Like Kubernetes' apiserver (samplingRatePerMillion, default 0): a request that arrives
    # inside a trace (every `kyb` command and ApiClient sends one) is always traced; one from
    # a plain NATS client without a traceparent starts a trace with this probability.
    root_ratio = _sample_ratio(ctx.options.get("trace_sample_ratio", os.environ.get("KYB_TRACE_SAMPLE_RATIO", "0")))
    inflight: set[asyncio.Task] = set()
    list_bytes = min(LIST_BYTES, ctx.nc.max_payload - REPLY_HEADROOM)

    async def serve_one(msg) -> None:
        async with limit:
            verb = msg.subject[len(SUBJECT_PREFIX) :]
            headers = msg.headers or {}
            traced = telemetry.carries_context(headers) or (root_ratio > 0 and random.random() < root_ratio)
            span = (
                telemetry.span_from_headers(f"api.{verb}", headers, SpanKind.SERVER, tracer_name="kyb.api")
                if traced
                else contextlib.nullcontext()
            )
            with span:
                if verb.startswith("node."):  # kyb.api.node.<node>.<verb>
                    _, node, node_verb = verb.split(".", 2)
                    body, reply_headers = await handle_node(api, node, node_verb, msg.data)
                else:
                    body, reply_headers = await handle(api, verb, msg.data, headers, list_bytes)
            if msg.reply:
                with contextlib.suppress(errors.KybError):  # the requester is gone, or so is NATS
                    await bus.publish(ctx.nc, msg.reply, body, headers=reply_headers)

    async def on_msg(msg) -> None:
        task = asyncio.create_task(serve_one(msg))
        inflight.add(task)
        task.add_done_callback(inflight.discard)

    sub = await ctx.nc.subscribe(SUBJECT_PREFIX + "*", queue=QUEUE, cb=on_msg, pending_msgs_limit=1_000_000)
    node_sub = await ctx.nc.subscribe(SUBJECT_PREFIX + "node.*.*", queue=QUEUE, cb=on_msg, pending_msgs_limit=1_000_000)
    ctx.log.info("api serving", subject=SUBJECT_PREFIX + "*", queue=QUEUE)
    repair_every = float(ctx.options.get("allocation_repair_seconds", 30))

    async def repair() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), repair_every)
            if stop.is_set():
                return
            try:
                freed = await allocator.repair(await ctx.store.list("Service"), older_than=repair_every)
                if freed:
                    ctx.log.info("freed leaked service allocations", count=freed)
            except Exception as e:
                ctx.log.warning("allocation repair failed", error=repr(e))

    repairer = asyncio.create_task(repair())
    try:
        await stop.wait()
    finally:
        repairer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await repairer
        with contextlib.suppress(Exception):
            await sub.drain()
        with contextlib.suppress(Exception):
            await node_sub.drain()
        if inflight:
            await asyncio.wait(set(inflight), timeout=5)
        await api.close()
        await kinds.stop()
        await namespaces.stop()
