"""nginx configuration for the nginx data plane, rendered from a routing
:class:`~services.ingress.plan.Table` (pure: text in, text out, as ingress-nginx's template).

Kubernetes' matching maps onto nginx's own: an exact host is a ``server_name``, a one-label
wildcard ``*.foo.com`` a regex ``server_name`` (nginx tries exact names before regexes, and
nginx's own ``*.foo.com`` would match any depth), host-less rules the ``default_server``. An
``Exact`` path is ``location = /p``; a ``Prefix`` path ``/p`` is ``location = /p`` plus
``location /p/`` (element-wise), ``/`` is ``location /``; nginx picks ``=`` first, then the
longest prefix, which is Kubernetes' precedence. A backend without ready endpoints answers 503,
a request no rule matches goes to the default backend or gets 404.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

from services.ingress.plan import Certificate, PathRule, Table, Target


class Listen(msgspec.Struct, frozen=True, kw_only=True):
    address: str
    http_port: int
    https_port: int


def certificate_file(cert: Certificate) -> str:
    """Base name (no suffix) of the files holding ``cert``: a digest, so a change makes a new file."""
    return hashlib.sha256(cert.cert + b"\0" + cert.key).hexdigest()[:24]


def upstream_name(target: Target) -> str:
    safe = re.sub(r"[^A-Za-z0-9_]", "_", target.name)
    return f"u_{safe}_{hashlib.sha256(target.name.encode()).hexdigest()[:8]}"


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _action(target: Target | None) -> str:
    if target is None:
        return "return 404;"
    if not target.backends:
        return "return 503;"
    return f"proxy_pass http://{upstream_name(target)};"


def locations(rules: tuple[PathRule, ...], fallback: Target | None) -> list[tuple[str, Target | None]]:
    """``(location argument, target)`` for one server, best rule first wins a shared location."""
    out: dict[str, Target | None] = {}
    for r in rules:
        if r.kind == "Exact":
            out.setdefault(f"= {_quote(r.path)}", r.target)
        elif r.path == "/":
            out.setdefault("/", r.target)
        else:
            out.setdefault(f"= {_quote(r.path)}", r.target)
            out.setdefault(_quote(r.path + "/"), r.target)
    out.setdefault("/", fallback)
    return list(out.items())


def wildcard_regex(suffix: str) -> str:
    """``.foo.com`` (from ``*.foo.com``) -> a server_name regex matching exactly one label."""
    return "~^[^.]+" + re.escape(suffix).replace("\\-", "-") + "$"


def _server(name: str, listen: Listen, default: bool, tls: Certificate | None, certs_dir: str,
            rules: tuple[PathRule, ...], fallback: Target | None) -> list[str]:
    flag = " default_server" if default else ""
    out = ["    server {", f"        listen {listen.address}:{listen.http_port}{flag};"]
    if tls is not None:
        base = f"{certs_dir}/{certificate_file(tls)}"
        out += [
            f"        listen {listen.address}:{listen.https_port} ssl{flag};",
            f"        ssl_certificate {base}.crt;",
            f"        ssl_certificate_key {base}.key;",
        ]
    out.append(f"        server_name {name};")
    for arg, target in locations(rules, fallback):
        out.append(f"        location {arg} {{ {_action(target)} }}")
    out.append("    }")
    return out


def render(table: Table, listen: Listen, workdir: str, *, worker_processes: int = 1) -> str:
    """The whole nginx.conf for ``table``; files go under ``workdir`` (certificates in
    ``workdir/certs``, written by the caller from :func:`certificates`)."""
    certs_dir = f"{workdir}/certs"
    default_cert = table.certificates[min(table.certificates)] if table.certificates else None
    lines = [
        f"worker_processes {worker_processes};",
        "daemon off;",
        f"pid {workdir}/nginx.pid;",
        f"error_log {workdir}/error.log warn;",
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        f"    client_body_temp_path {workdir}/tmp/body;",
        f"    proxy_temp_path {workdir}/tmp/proxy;",
        f"    fastcgi_temp_path {workdir}/tmp/fastcgi;",
        f"    uwsgi_temp_path {workdir}/tmp/uwsgi;",
        f"    scgi_temp_path {workdir}/tmp/scgi;",
        "    keepalive_requests 1000000;",
        "    client_max_body_size 0;  # bodies stream; no limit, as the builtin plane",
        "    server_names_hash_bucket_size 128;",
        "    map $http_upgrade $connection_upgrade { default upgrade; '' ''; }",
        "    proxy_http_version 1.1;",
        "    proxy_buffering off;",
        "    proxy_request_buffering off;",
        "    proxy_connect_timeout 2s;",
        "    proxy_read_timeout 3600s;",
        "    proxy_send_timeout 3600s;",
        "    proxy_next_upstream error timeout;",
        "    proxy_set_header Host $http_host;",
        "    proxy_set_header Upgrade $http_upgrade;",
        "    proxy_set_header Connection $connection_upgrade;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Host $http_host;",
        "    proxy_set_header X-Forwarded-Port $server_port;",
    ]
    for target in table.targets():
        if not target.backends:
            continue
        lines.append(f"    upstream {upstream_name(target)} {{")
        lines += [f"        server {ip}:{port} max_fails=0;" for ip, port in target.backends]
        lines += ["        keepalive 64;", "    }"]
    lines += _server("_", listen, True, default_cert, certs_dir, table.any_host, table.default)
    for host, rules in sorted(table.exact.items()):
        lines += _server(host, listen, False, table.certificate(host) or default_cert, certs_dir, rules, table.default)
    for suffix, rules in sorted(table.wildcard.items()):
        cert = table.certificate("*" + suffix) or default_cert
        lines += _server(wildcard_regex(suffix), listen, False, cert, certs_dir, rules, table.default)
    lines.append("}")
    return "\n".join(lines) + "\n"


def certificates(table: Table) -> dict[str, bytes]:
    """File name -> content for every certificate and key the configuration names."""
    out: dict[str, bytes] = {}
    for cert in table.certificates.values():
        base = certificate_file(cert)
        out[base + ".crt"] = cert.cert
        out[base + ".key"] = cert.key
    return out
