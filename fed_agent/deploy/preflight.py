"""Checks of a deploy command's inputs before anything starts, each failing in one line.

An operator's mistake (a missing or garbled certificate, a key in the wrong format, a port in
use, a database folder that does not exist, no SuperLink at the address given) must be named
before a Flower process starts, not found later in that process's log. Every check raises
:class:`PreflightError` with one line that names the flag, the path or address and what to do.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)

PROBE_TIMEOUT_S = 5.0
"""How long a probe of the SuperLink's ``/health`` waits for an answer."""


class PreflightError(ValueError):
    """A deploy command's input that cannot work; the message is one line for the operator."""


class UntrustedSuperLink(PreflightError):
    """The SuperLink answers, but with a certificate ``--ca`` does not verify: no retry helps."""


def _read(path: Path, flag: str) -> bytes:
    if not path.exists():
        raise PreflightError(f"{flag} {path}: no such file")
    if not path.is_file():
        raise PreflightError(f"{flag} {path}: not a file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise PreflightError(f"{flag} {path}: cannot be read ({err.strerror})") from err


def check_certificate(path: Path, flag: str) -> x509.Certificate:
    """A PEM X.509 certificate (the CA's or the SuperLink's)."""
    try:
        return x509.load_pem_x509_certificate(_read(path, flag))
    except ValueError as err:
        raise PreflightError(f"{flag} {path}: not a PEM certificate ({err})") from err


def check_tls_key(path: Path, certificate: x509.Certificate, flag: str) -> None:
    """The SuperLink's PEM private key, unencrypted, and the one its certificate names."""
    try:
        key = load_pem_private_key(_read(path, flag), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise PreflightError(f"{flag} {path}: not an unencrypted PEM private key ({err})") from err
    if key.public_key() != certificate.public_key():
        raise PreflightError(
            f"{flag} {path}: this key does not belong to the server certificate; use the pair "
            "`fed-agent deploy certs` wrote together"
        )


def check_node_private_key(path: Path, flag: str = "--key") -> None:
    """A SuperNode's authentication key: an unencrypted OpenSSH private key."""
    data = _read(path, flag)  # a missing file is reported as such
    try:
        load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        hint = " (that is the public half)" if path.suffix == ".pub" else ""
        raise PreflightError(
            f"{flag} {path}: not an unencrypted OpenSSH private key{hint} ({err})"
        ) from err


def check_identity_key(path: Path, flag: str) -> None:
    """An ES's identity key (node config ``identity-key``): an unencrypted OpenSSH ECDSA or
    Ed25519 private key, as the ES loads it (``fed_agent.es_keys.load_identity_key``)."""
    from fed_agent.es_keys import IdentityKeyError, load_identity_key

    try:
        load_identity_key(path)
    except IdentityKeyError as err:
        raise PreflightError(f"{flag} {path}: {err.problem}") from err


def check_node_public_key(path: Path) -> None:
    """A SuperNode's public key to register: one OpenSSH public key line."""
    try:
        load_ssh_public_key(_read(path, "public key").strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise PreflightError(f"public key {path}: not an OpenSSH public key ({err})") from err


def parse_address(address: str, flag: str = "--superlink") -> tuple[str, int]:
    """``host:port`` -> (host, port), the port in [1, 65535]."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise PreflightError(f"{flag} {address!r}: expected host:port with a port in [1, 65535]")
    return host.strip("[]"), int(port)


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """Nothing listens on ``host:port`` now (bound the way uvicorn binds it)."""
    if not 1 <= port <= 65535:
        raise PreflightError(f"{flag} {port}: outside [1, 65535]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            reason = "in use" if err.errno == errno.EADDRINUSE else err.strerror
            raise PreflightError(
                f"{flag} {port} on {host}: cannot listen there ({reason}); stop what uses it or "
                "choose another port"
            ) from err


def prepare_database(path: Path) -> Path:
    """The SuperLink's SQLite file: its folder exists (created if missing) and is writable."""
    path = path.expanduser().resolve()
    if path.is_dir():
        raise PreflightError(f"--database {path}: is a folder; give a file such as state.db")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PreflightError(
            f"--database {path}: cannot create its folder {path.parent} ({err.strerror}); "
            "create it with the right owner or choose another path"
        ) from err
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PreflightError(f"--database {path}: not writable by this user")
    return path


def check_superlink(address: str, ca_cert: Path) -> None:
    """A SuperLink answers ``https://address/health`` with a certificate ``ca_cert`` verifies."""
    host, port = parse_address(address)
    check_certificate(ca_cert, "--ca")
    context = ssl.create_default_context(cafile=str(ca_cert))
    url = f"https://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S, context=context):
            return
    except urllib.error.HTTPError:
        return  # an HTTP answer over verified TLS: a server is there and trusted
    except (urllib.error.URLError, OSError) as err:
        cause = getattr(err, "reason", err)
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise UntrustedSuperLink(
                f"SuperLink {address}: its certificate does not verify against --ca {ca_cert} "
                f"({cause.verify_message}); use the CA that signed the SuperLink's certificate "
                "and an address among its hosts"
            ) from err
        raise PreflightError(f"SuperLink {address}: {_reason(cause)}") from err


def _reason(cause: BaseException) -> str:
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused: no SuperLink listens there (start `fed-agent deploy superlink`)"
    if isinstance(cause, TimeoutError | socket.timeout):
        return f"no answer within {PROBE_TIMEOUT_S:g} s (host down or port filtered)"
    if isinstance(cause, socket.gaierror):
        return f"unknown host ({cause.strerror})"
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed ({cause.reason or cause}); is it a TLS SuperLink?"
    return str(cause)
