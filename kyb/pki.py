"""What a Kubernetes client needs to reach the apiserver: a CA, the serving certificate it
signs, a bearer token and the kubeconfig naming all three, kept in the data directory; and
the service account key that signs the tokens pods get (kyb/satoken.py).

``kyb up`` (and the apiserver when it runs alone) calls :func:`ensure`; the CA, the serving
certificate and the token are made once and kept across runs, so a kubeconfig copied
elsewhere keeps working; the kubeconfig itself is rewritten each time (the port may change).
Every secret file is 0600.

The credential is a bearer token rather than a client certificate: every Kubernetes client
(kubectl, client-go, the Python client, curl) sends it as ``Authorization: Bearer``, the
server checks it in constant time without asking TLS for a client certificate, and it is
replaced by deleting one file.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kyb import satoken

NAME = "kybernetes"  # the kubeconfig's cluster, user and context
DEFAULT_PORT = 6443
HOSTS = ("127.0.0.1", "localhost")
VALID_DAYS = 3650


@dataclass(frozen=True)
class ApiserverFiles:
    """The files under ``<data-dir>/apiserver`` and the kubeconfig beside them."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    token_file: Path
    kubeconfig: Path
    sa_key: Path  # signs service account tokens (the api) and checks them (the apiserver)

    @classmethod
    def under(cls, data_dir: Path) -> ApiserverFiles:
        d = Path(data_dir) / "apiserver"
        return cls(dir=d, ca_cert=d / "ca.crt", ca_key=d / "ca.key", cert=d / "server.crt", key=d / "server.key",
                   token_file=d / "token", kubeconfig=Path(data_dir) / "kubeconfig.yaml", sa_key=d / "sa.key")

    def token(self) -> str:
        return self.token_file.read_text().strip()


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _new_ca(files: ApiserverFiles, now: _dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{NAME}-ca")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(files.ca_key, _key_pem(key), 0o600)
    _write(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _new_serving_cert(files: ApiserverFiles, now: _dt.datetime) -> None:
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{NAME}-apiserver")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key), 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def kubeconfig(server: str, ca_pem: bytes, token: str) -> str:
    import base64

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NAME, "cluster": {"server": server,
                                                "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": NAME, "user": {"token": token}}],
        "contexts": [{"name": NAME, "context": {"cluster": NAME, "user": NAME}}],
        "current-context": NAME,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def ensure(data_dir: Path, port: int = DEFAULT_PORT, *, now: _dt.datetime | None = None) -> ApiserverFiles:
    """The apiserver's files under ``data_dir``: made when missing, kept otherwise; the
    kubeconfig for ``https://127.0.0.1:<port>`` written (0600) every time."""
    now = now or _dt.datetime.now(_dt.UTC)
    files = ApiserverFiles.under(Path(data_dir))
    files.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(files.dir, 0o700)
    if not (files.ca_cert.exists() and files.ca_key.exists()):
        _new_ca(files, now)
        files.cert.unlink(missing_ok=True)
    if not (files.cert.exists() and files.key.exists()):
        _new_serving_cert(files, now)
    if not files.token_file.exists():
        _write(files.token_file, (secrets.token_urlsafe(32) + "\n").encode(), 0o600)
    satoken.ensure_key(files.sa_key)
    text = kubeconfig(f"https://127.0.0.1:{port}", files.ca_cert.read_bytes(), files.token())
    _write(files.kubeconfig, text.encode(), 0o600)
    return files
