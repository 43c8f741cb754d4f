"""Which ES each node is: the identity it names and the public key that proves it.

Flower's node ids change with every run; an ES names a stable identity (its data shard) in
its public-facts reply, with the public half of its identity key and a signature over the
cloud's fresh challenge (``fed_agent.es_keys``; a reply whose signature does not verify is
refused before it gets here). The first node to name an identity fixes the identity's key:
trust on first use, since who may connect at all is the SuperLink's node authentication's
call. From then on a node that names the identity with another key is an impostor, refused
with its reason, and an engagement moves to a new node id only with the same key.

Only names and public keys are kept (and checkpointed with the strategy); nothing here lets
anyone produce a proof.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fed_agent.es_keys import fingerprint, verify
from fed_agent.protocol import IdentityClaim


@dataclass(frozen=True)
class KnownEs:
    """An identity a node proved, and the public key it proved it with ("": none recorded,
    which no node can match)."""

    name: str
    public_key: str


class EsIdentities:
    """The identity and public key of every node that proved one, by node id in this run."""

    def __init__(self) -> None:
        self.by_node: dict[int, KnownEs] = {}

    def proves(self, claim: IdentityClaim, challenge: str) -> bool:
        """Whether the claim's proof is its key's signature over the name and ``challenge``."""
        return verify(claim.public_key, claim.name, challenge, claim.proof)

    def holders(self, name: str) -> list[int]:
        """The node ids known under the identity ``name``."""
        return [n for n, known in self.by_node.items() if known.name == name]

    def same_key(self, node_id: int, claim: IdentityClaim) -> bool:
        """Whether ``node_id`` proved the claim's identity with the claim's key."""
        known = self.by_node.get(node_id)
        return (
            known is not None and known.name == claim.name and known.public_key == claim.public_key
        )

    def impostor_reason(self, claim: IdentityClaim) -> str | None:
        """Why a node that makes ``claim`` is not the ES of that name (its key is not the one
        recorded for the name), or None."""
        keys = {self.by_node[n].public_key for n in self.holders(claim.name)} - {""}
        if not keys or keys == {claim.public_key}:
            return None
        return (
            f"names ES {claim.name} with key {fingerprint(claim.public_key)}, not the key "
            f"recorded for that ES: an impostor or a misconfigured node; refused"
        )

    def twin_reason(self, node_id: int, claim: IdentityClaim, live: set[int]) -> str | None:
        """Why ``node_id`` is not the ES its claim names while another connected node already
        is (one ES, one node: a second machine with the ES's key is a clone), or None."""
        twins = [n for n in self.holders(claim.name) if n != node_id and n in live]
        if not twins:
            return None
        return (
            f"names ES {claim.name}, which connected node {twins[0]} already is: one ES is one "
            f"node (a clone of its key, or a node started twice); refused"
        )

    def earlier_node(
        self,
        node_id: int,
        claim: IdentityClaim | None,
        live: set[int],
        facts: tuple[Mapping[int, object], object],
    ) -> int | None:
        """The earlier node id of the ES ``node_id`` is, or None: the node id known under the
        claim's identity and key, with the same public facts (``facts``: the recorded facts by
        node id, and the facts ``node_id`` reports), when that node is not connected and no
        other connected node holds the identity."""
        if claim is None:
            return None
        holders = self.holders(claim.name)
        if any(n in live and n != node_id for n in holders):
            return None
        known, reported = facts
        gone = [
            n
            for n in holders
            if n not in live and known.get(n) == reported and self.same_key(n, claim)
        ]
        return gone[0] if gone else None

    def add(self, node_id: int, claim: IdentityClaim) -> None:
        self.by_node[node_id] = KnownEs(claim.name, claim.public_key)

    def move(self, old: int, new: int) -> None:
        """Keep the ES known as node ``old`` under node id ``new``."""
        self.by_node[new] = self.by_node.pop(old)

    def name_of(self, node_id: int) -> str:
        return self.by_node[node_id].name

    def state_dict(self) -> dict[str, dict[str, str]]:
        """Names and public keys by node id (JSON-ready)."""
        return {
            str(n): {"name": k.name, "public_key": k.public_key} for n, k in self.by_node.items()
        }

    def load_state_dict(self, state: dict[str, dict[str, str] | str]) -> None:
        """Restore :meth:`state_dict`; an entry that is a bare name records no key, so its
        engagement moves to no other node."""
        self.by_node = {
            int(n): KnownEs(k, "")
            if isinstance(k, str)
            else KnownEs(str(k["name"]), str(k["public_key"]))
            for n, k in state.items()
        }
