"""An ES's identity key: a signature over (identity, challenge) that only the key's holder
can make, that a recorded reply cannot answer a fresh challenge with, and key files whose
problems are one line each."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fed_agent.deploy.certs import generate_node_keys
from fed_agent.es_keys import (
    IdentityKeyError,
    load_identity_key,
    public_key_text,
    sign,
    simulated_identity_key,
    verify,
)
from fed_agent.protocol import (
    ES_IDENTITY,
    ES_PROOF,
    ES_PUBLIC_KEY,
    ProtocolError,
    new_challenge,
    read_identity,
)

NAME = "partition-0-of-3"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two SuperNode keys as `fed-agent deploy certs` makes them (OpenSSH, P-384)."""
    return generate_node_keys(tmp_path_factory.mktemp("keys"), 2)


def test_only_the_keys_holder_proves_an_identity_and_a_proof_answers_one_challenge(keys):
    honest, other = (load_identity_key(k.private_key) for k in keys)
    challenge = new_challenge()
    proof = sign(honest, NAME, challenge)
    public = public_key_text(honest)
    assert verify(public, NAME, challenge, proof)
    # a replay: the same proof to a fresh challenge
    assert not verify(public, NAME, new_challenge(), proof)
    # the proof of another identity, and another key's proof under the honest public key
    assert not verify(public, "partition-1-of-3", challenge, proof)
    assert not verify(public, NAME, challenge, sign(other, NAME, challenge))
    assert not verify("ssh-rsa not-a-key", NAME, challenge, proof)
    assert not verify(public, NAME, challenge, "00")
    # the public half is the SuperNode's registered key (its .pub file without the comment)
    assert public.split() == keys[0].public_key.read_text().split()[:2]


def test_ed25519_keys_prove_too(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "id_ed25519"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    loaded = load_identity_key(path)
    assert verify(public_key_text(loaded), NAME, "c", sign(loaded, NAME, "c"))


def test_simulated_keys_follow_the_seed_and_the_partition():
    first = public_key_text(simulated_identity_key(0, 0))
    assert first == public_key_text(simulated_identity_key(0, 0))
    assert first != public_key_text(simulated_identity_key(0, 1))
    assert first != public_key_text(simulated_identity_key(1, 0))


def test_an_unusable_key_file_is_one_line_naming_the_file_and_its_problem(keys, tmp_path):
    missing = tmp_path / "absent"
    with pytest.raises(IdentityKeyError, match="absent: no such file") as err:
        load_identity_key(missing)
    assert err.value.problem == "no such file" and "\n" not in str(err.value)
    with pytest.raises(IdentityKeyError) as err:
        load_identity_key(keys[0].public_key)  # the public half
    assert err.value.problem == "not an unencrypted OpenSSH private key"
    with pytest.raises(IdentityKeyError, match="cannot be read"):
        load_identity_key(tmp_path)  # a folder


def test_an_identity_comes_with_its_key_and_a_hex_proof():
    claim = {ES_IDENTITY: NAME, ES_PUBLIC_KEY: "ecdsa-sha2-nistp384 AAAA", ES_PROOF: "0a1b"}
    parsed = read_identity(claim)
    assert (parsed.name, parsed.public_key, parsed.proof) == (NAME, claim[ES_PUBLIC_KEY], "0a1b")
    assert read_identity({}) is None
    with pytest.raises(ProtocolError, match="needs es-public-key and es-proof"):
        read_identity({ES_IDENTITY: NAME})
    with pytest.raises(ProtocolError, match="lowercase hex"):
        read_identity({**claim, ES_PROOF: "not hex"})
    with pytest.raises(ProtocolError, match="<= 1024 chars"):
        read_identity({**claim, ES_PUBLIC_KEY: "k" * 1025})
