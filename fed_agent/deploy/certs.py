"""TLS certificates for the SuperLink and ECDSA authentication keys for SuperNodes.

Flower 1.42 uses server-side TLS only (no client certificates): the SuperLink presents a
certificate signed by our CA, SuperNodes and the ``flwr`` CLI verify it with the CA
certificate. SuperNodes prove who they are with an ECDSA key pair in OpenSSH format whose
public half is registered on the SuperLink (``flwr supernode register``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
VALID_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    """The three files a TLS SuperLink needs; SuperNodes and the CLI need only ``ca_cert``."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKey:
    """A SuperNode's authentication key pair (OpenSSH format, NIST P-384)."""

    private_key: Path
    public_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FedAgent"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


DNS_NAME = re.compile(
    r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
"""A host name a certificate can name: dot-separated labels of letters, digits and inner
hyphens (RFC 1123), optionally behind a ``*.`` wildcard."""


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def check_host(host: str) -> None:
    """Refuse a certificate host that is neither an IP address nor a DNS name (a SuperNode's
    hostname check could never match it), before any key is generated."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if len(host) > 253 or not DNS_NAME.fullmatch(host):
            raise ValueError(
                f"--host {host!r} is neither an IP address nor a DNS name "
                "(letters, digits, '-' and '.')"
            ) from None


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only (created 0600, never world-readable)."""
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(data)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def generate_tls(
    out_dir: Path, hosts: Sequence[str] = DEFAULT_HOSTS, valid_days: int = VALID_DAYS
) -> TlsFiles:
    """Write a CA and a SuperLink server certificate for ``hosts`` into ``out_dir``.

    Parameters
    ----------
    out_dir
        Created if missing; ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` are
        (over)written there.
    hosts
        IP addresses and DNS names the SuperNodes use to reach the SuperLink; each becomes a
        subject alternative name (hostname verification checks SANs, not the common name).
    valid_days
        Validity of both certificates.

    Returns
    -------
    TlsFiles
        Paths of the CA certificate, the server certificate and the server key.
    """
    if not hosts:
        raise ValueError("the server certificate needs at least one host name or address")
    for host in hosts:
        check_host(host)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    # backdated a little: a SuperNode whose clock lags must not see a not-yet-valid certificate
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=valid_days)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("FedAgent CA"))
        .issuer_name(_name("FedAgent CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(out_dir / "ca.crt", out_dir / "server.pem", out_dir / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out_dir / "ca.key", _pem_key(ca_key))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.server_key, _pem_key(server_key))
    return files


def generate_node_key(out_dir: Path, name: str) -> NodeKey:
    """Write ``<name>`` (private) and ``<name>.pub`` (public): an ECDSA P-384 OpenSSH key pair.

    The same format as ``ssh-keygen -t ecdsa -b 384 -N ""``, which ``flower-supernode
    --auth-supernode-private-key`` and ``flwr supernode register`` read.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    pair = NodeKey(out_dir / name, out_dir / f"{name}.pub")
    _write_private(
        pair.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    pair.public_key.write_bytes(public + f" {name}\n".encode())
    return pair


def generate_node_keys(out_dir: Path, count: int, prefix: str = "supernode") -> list[NodeKey]:
    """``count`` SuperNode key pairs named ``<prefix>-<i>``."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return [generate_node_key(out_dir, f"{prefix}-{i}") for i in range(count)]
