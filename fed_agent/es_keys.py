"""An ES's identity key: how an ES proves it is the ES the cloud engaged, across restarts.

Flower gives a node a new id in every run, so a resumed cloud finds an engagement (contract,
report, held pay) by the identity an ES names (``protocol.es_identity``: its data shard). A
name alone proves nothing, so the ES also holds a private key and answers the cloud's fresh
challenge with a signature over (domain, identity, challenge) and its public key. The cloud
keeps the public key of the node that first named the identity and rebinds an engagement only
to a node whose signature verifies under that key. Neither the key nor anything from which it
follows ever leaves the ES: the reply carries the public key and a signature over a challenge
the cloud never repeats, so a recorded reply proves nothing to the next challenge.

Where the key comes from (:func:`load_identity_key`): the node-config entry
``protocol.IDENTITY_KEY`` names an unencrypted OpenSSH private key (ECDSA or Ed25519) on the
ES's machine; in a deployment ``fed-agent deploy`` sets it to the SuperNode's own
authentication key. Without the entry (simulation) the key is derived from the run's seed
and the partition (:func:`simulated_identity_key`): anyone who knows the run config can
derive it, so it tells honest simulated ESs apart and guards against nothing.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
DOMAIN = b"fedagent-es-identity-v1"
"""Prefix of every signed message: a signature made for anything else never verifies here."""
SIMULATED_CURVE = ec.SECP384R1()
"""The curve of simulated keys (the one ``fed-agent deploy certs`` uses for SuperNode keys)."""


class IdentityKeyError(ValueError):
    """The node config names an identity key that cannot be read or used: ``problem`` says
    what is wrong without the file's path (the cloud sees it), the message names the path."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"identity key {path}: {problem}")
        self.problem = problem


def load_identity_key(path: str | Path) -> PrivateKey:
    """The private key in the OpenSSH file ``path``; a one-line IdentityKeyError when the file
    is missing, unreadable, encrypted or not an ECDSA/Ed25519 private key."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise IdentityKeyError(path, "no such file") from err
    except OSError as err:
        raise IdentityKeyError(path, f"cannot be read ({err.strerror})") from err
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise IdentityKeyError(path, "not an unencrypted OpenSSH private key") from err
    if not isinstance(key, PrivateKey):
        raise IdentityKeyError(path, f"a {type(key).__name__}, neither ECDSA nor Ed25519")
    return key


def simulated_identity_key(seed: int, partition_id: int) -> PrivateKey:
    """A simulated ES's key, derived from the run's seed and its partition (see the module
    docstring: anyone who knows the run config can derive it)."""
    digest = hashlib.sha256(f"fedagent-simulated-es-key/{seed}/{partition_id}".encode()).digest()
    return ec.derive_private_key(int.from_bytes(digest, "big") + 1, SIMULATED_CURVE)


def public_key_text(key: PrivateKey) -> str:
    """The key's public half as one OpenSSH line (``ecdsa-sha2-nistp384 AAAA...``)."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def fingerprint(public_key: str) -> str:
    """A public key's short fingerprint for logs and ledger reasons (SHA-256, as ssh-keygen)."""
    digest = hashlib.sha256(public_key.encode()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")[:16]


def _message(identity: str, challenge: str) -> bytes:
    return b"\x00".join((DOMAIN, identity.encode(), challenge.encode()))


def sign(key: PrivateKey, identity: str, challenge: str) -> str:
    """The proof that the holder of ``key`` names ``identity`` in answer to ``challenge``."""
    message = _message(identity, challenge)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message).hex()
    return key.sign(message, ec.ECDSA(hashes.SHA256())).hex()


def verify(public_key: str, identity: str, challenge: str, proof: str) -> bool:
    """Whether ``proof`` is the signature of ``public_key``'s holder over (identity,
    challenge); False for any malformed key or proof."""
    try:
        key = serialization.load_ssh_public_key(public_key.encode())
        signature = bytes.fromhex(proof)
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, _message(identity, challenge))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, _message(identity, challenge), ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (ValueError, TypeError, UnsupportedAlgorithm, InvalidSignature):
        return False
    return True
