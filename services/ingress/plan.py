"""What the ingress serves, as pure functions of Ingresses, IngressClasses, Services,
EndpointSlices and Secrets (no I/O), shared by both data planes.

:func:`table` builds a :class:`Table`: per host (exact, one-label wildcard, or any host) an
ordered list of path rules, each pointing at a :class:`Target` (a Service port and its ready
endpoints), plus the default backend and the TLS certificates by host. :func:`Table.route`
answers one request ``(host, path)`` with Kubernetes' precedence: an exact host before a
wildcard host before host-less rules; within a host the longest path first, ``Exact``
before ``Prefix`` at equal length; ``Prefix`` matches whole path elements (``/foo`` matches
``/foo`` and ``/foo/bar``, not ``/foobar``); ``ImplementationSpecific`` is ``Prefix``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Literal

import msgspec

from schemas import classes as classes_rule
from schemas.core import Secret, Service
from schemas.discovery import EndpointSlice, slices_by_service
from schemas.networking import Ingress, IngressBackend, IngressClass

CONTROLLER = "kybernetes.io/ingress"
DEFAULT_CLASS = "kyb"
DEFAULT_CLASS_ANNOTATION = classes_rule.INGRESS_DEFAULT_ANNOTATION
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"

Address = tuple[str, int]
PathKind = Literal["Exact", "Prefix"]


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """A Service port reached through the ingress: ``<namespace>/<service>:<port>``."""

    namespace: str
    service: str
    port: str  # the Ingress backend's port: a number or a Service port name, as text
    backends: tuple[Address, ...]  # ready endpoints, sorted; empty means 503

    @property
    def name(self) -> str:
        return f"{self.namespace}-{self.service}-{self.port}"


class PathRule(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # normalised: Prefix paths without a trailing slash ("/" stays "/")
    kind: PathKind
    target: Target | None  # None: a backend that is not a Service (resource) -> 404

    @property
    def rank(self) -> tuple[int, int]:
        """Sort key, best first: longer paths, then Exact before Prefix."""
        return (-len(self.path), 0 if self.kind == "Exact" else 1)

    def matches(self, path: str) -> bool:
        if self.kind == "Exact":
            return path == self.path
        return prefix_matches(self.path, path)


class Certificate(msgspec.Struct, frozen=True, kw_only=True):
    secret: str  # <namespace>/<name>
    cert: bytes  # PEM
    key: bytes  # PEM


class Table(msgspec.Struct, frozen=True, kw_only=True):
    exact: dict[str, tuple[PathRule, ...]] = {}  # host -> rules, best first
    wildcard: dict[str, tuple[PathRule, ...]] = {}  # ".foo.com" for "*.foo.com" -> rules
    any_host: tuple[PathRule, ...] = ()
    default: Target | None = None
    certificates: dict[str, Certificate] = {}  # host or "*.foo.com" -> certificate

    def rules_for(self, host: str) -> tuple[PathRule, ...]:
        """The rules of the most specific host entry that names ``host``."""
        host = normalise_host(host)
        rules = self.exact.get(host)
        if rules is not None:
            return rules
        dot = host.find(".")
        if dot > 0:
            rules = self.wildcard.get(host[dot:])
            if rules is not None:
                return rules
        return self.any_host

    def route(self, host: str, path: str) -> Target | None:
        """Where a request for ``host`` and ``path`` goes; None means 404."""
        path = path.split("?", 1)[0] or "/"
        for rule in self.rules_for(host):
            if rule.matches(path):
                return rule.target
        return self.default

    def certificate(self, server_name: str | None) -> Certificate | None:
        """The certificate for an SNI name: exact host, then its one-label wildcard."""
        if not server_name:
            return None
        host = normalise_host(server_name)
        cert = self.certificates.get(host)
        if cert is None and "." in host:
            cert = self.certificates.get("*" + host[host.find("."):])
        return cert

    def targets(self) -> list[Target]:
        seen: dict[str, Target] = {}
        every = [r.target for rules in (*self.exact.values(), *self.wildcard.values(), self.any_host) for r in rules]
        for t in [*every, self.default]:
            if t is not None:
                seen.setdefault(t.name, t)
        return [seen[k] for k in sorted(seen)]


def normalise_host(host: str) -> str:
    """Lower case, without a port (``Host: Foo.com:8080`` -> ``foo.com``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def normalise_path(path: str, kind: PathKind) -> str:
    path = path or "/"
    if kind == "Prefix" and len(path) > 1:
        path = path.rstrip("/") or "/"
    return path


def prefix_matches(prefix: str, path: str) -> bool:
    """Element-wise prefix match: every element of ``prefix`` equals the path's element."""
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix + "/")


# -- which Ingresses are ours -------------------------------------------------------------


def our_classes(classes: Iterable[IngressClass], class_name: str = DEFAULT_CLASS) -> set[str]:
    """Class names this controller serves: its own name and every IngressClass naming it."""
    return {class_name} | {c.metadata.name for c in classes if c.spec.controller == CONTROLLER}


def default_class(classes: Iterable[IngressClass]) -> str | None:
    """The cluster's default IngressClass (the newest, if several claim it, as Kubernetes picks it)."""
    return classes_rule.default_class(classes, DEFAULT_CLASS_ANNOTATION)


def is_ours(ingress: Ingress, classes: Iterable[IngressClass], class_name: str = DEFAULT_CLASS,
            *, watch_without_class: bool = False) -> bool:
    """Whether this controller serves ``ingress``: by ``spec.ingressClassName``, else the
    legacy annotation, else the default IngressClass (or any class-less one when told so)."""
    classes = list(classes)
    mine = our_classes(classes, class_name)
    name = ingress.spec.ingressClassName or ingress.metadata.annotations.get(LEGACY_CLASS_ANNOTATION)
    if name:
        return name in mine
    default = default_class(classes)
    if default is not None:
        return default in mine
    return watch_without_class


# -- the table ----------------------------------------------------------------------------


def ready_backends(service: Service | None, slices: list[EndpointSlice], port: str) -> tuple[Address, ...]:
    """Ready endpoint addresses of the Service port named or numbered ``port``."""
    if service is None:
        return ()
    port_name: str | None = None
    for p in service.spec.ports:
        if (port.isdigit() and p.port == int(port)) or (p.name and p.name == port):
            if p.protocol == "TCP":
                port_name = p.name or ""
            break
    if port_name is None:
        return ()
    out: set[Address] = set()
    for s in slices:
        if s.addressType != "IPv4":
            continue
        number = next((p.port for p in s.ports if (p.name or "") == port_name and p.protocol == "TCP" and p.port), None)
        if number is None:
            continue
        for ep in s.endpoints:
            if ep.conditions.ready is False:  # unset means ready
                continue
            out.update((ip, number) for ip in ep.addresses)
    return tuple(sorted(out))


def _target(namespace: str, backend: IngressBackend | None, services: dict[tuple[str, str], Service],
            slices: dict[tuple[str, str], list[EndpointSlice]]) -> Target | None:
    if backend is None or backend.service is None:
        return None
    ref = backend.service
    port = str(ref.port.number) if ref.port.number is not None else ref.port.name
    key = (namespace, ref.name)
    return Target(namespace=namespace, service=ref.name, port=port,
                  backends=ready_backends(services.get(key), slices.get(key, []), port))


def decode_certificate(secret: Secret) -> Certificate | None:
    """A kubernetes.io/tls Secret's tls.crt and tls.key (base64 in ``data``), or None."""
    try:
        cert = base64.b64decode(secret.data.get("tls.crt", ""), validate=True)
        key = base64.b64decode(secret.data.get("tls.key", ""), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not cert or not key:
        return None
    return Certificate(secret=f"{secret.metadata.namespace or 'default'}/{secret.metadata.name}", cert=cert, key=key)


def _order(ingresses: Iterable[Ingress]) -> list[Ingress]:
    """The oldest Ingress wins a clash (same host and path), as ingress-nginx does."""
    return sorted(ingresses, key=lambda i: (i.metadata.creationTimestamp or "", i.metadata.namespace or "", i.metadata.name))


def table(
    ingresses: Iterable[Ingress],
    services: Iterable[Service],
    slices: Iterable[EndpointSlice],
    secrets: Iterable[Secret] = (),
) -> Table:
    """The merged routing table of ``ingresses`` (already filtered to ours)."""
    svc = {(s.metadata.namespace or "default", s.metadata.name): s for s in services}
    by_service = slices_by_service(slices)
    sec = {(s.metadata.namespace or "default", s.metadata.name): s for s in secrets}
    hosts: dict[str, dict[tuple[str, PathKind], PathRule]] = {}
    default: Target | None = None
    certificates: dict[str, Certificate] = {}
    for ing in _order(ingresses):
        ns = ing.metadata.namespace or "default"
        if default is None and ing.spec.defaultBackend is not None:
            default = _target(ns, ing.spec.defaultBackend, svc, by_service)
        for rule in ing.spec.rules:
            host = rule.host.lower()
            entry = hosts.setdefault(host, {})
            for p in (rule.http.paths if rule.http else []):
                kind: PathKind = "Exact" if p.pathType == "Exact" else "Prefix"
                path = normalise_path(p.path, kind)
                entry.setdefault((path, kind), PathRule(path=path, kind=kind, target=_target(ns, p.backend, svc, by_service)))
        for tls in ing.spec.tls:
            secret = sec.get((ns, tls.secretName))
            cert = decode_certificate(secret) if secret is not None and tls.secretName else None
            if cert is None:
                continue
            for h in tls.hosts:
                certificates.setdefault(h.lower(), cert)
    exact: dict[str, tuple[PathRule, ...]] = {}
    wildcard: dict[str, tuple[PathRule, ...]] = {}
    any_host: tuple[PathRule, ...] = ()
    for host, entry in hosts.items():
        rules = tuple(sorted(entry.values(), key=lambda r: (*r.rank, r.path)))
        if host == "":
            any_host = rules
        elif host.startswith("*."):
            wildcard[host[1:]] = rules
        else:
            exact[host] = rules
    return Table(exact=exact, wildcard=wildcard, any_host=any_host, default=default, certificates=certificates)


def wants_status(ingress: Ingress, ours: bool, address: str) -> list[str] | None:
    """The ``status.loadBalancer.ingress[].ip`` list the Ingress should carry, or None when
    it already does: ours -> ``[address]``; not ours but showing our address -> ``[]``."""
    current = [i.ip for i in ingress.status.loadBalancer.ingress]
    if ours:
        return None if current == [address] else [address]
    return [] if address in current else None
