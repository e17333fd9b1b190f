"""TLS for NATS: a nats-server with certificates, a client that trusts its CA connects, one
that does not is refused."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kyb import auth, errors
from kyb.client import connect
from kyb.natsd import NatsServer, free_port


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls_server(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kyb test CA")])
    ca = _cert("kyb test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("127.0.0.1", key, ca_name, ca_key, ca=False)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = NatsServer(store_dir=tmp_path / "js", port=free_port(), log_file=tmp_path / "nats.log",
                        tls_cert=tmp_path / "server.pem", tls_key=tmp_path / "server.key")
    server.start()
    yield server, tmp_path / "ca.pem"
    server.stop()
    auth.set_default(None)


async def test_a_client_trusting_the_ca_connects_over_tls(tls_server):
    server, ca = tls_server
    assert server.url.startswith("tls://")
    auth.set_default(auth.ClientAuth(tls_ca=str(ca)))
    nc = await connect(server.url)
    try:
        sub = await nc.subscribe("hello")
        await nc.publish("hello", b"over tls")
        assert (await sub.next_msg(timeout=5)).data == b"over tls"
    finally:
        await nc.close()


async def test_a_client_without_the_ca_is_refused(tls_server):
    server, _ = tls_server
    auth.set_default(auth.ClientAuth())
    with pytest.raises(errors.Unreachable):
        await connect(server.url)
