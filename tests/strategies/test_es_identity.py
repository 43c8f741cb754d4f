"""Only the ES that holds an identity's key gets that identity's engagement after a restart.

The ESs of a first run prove their identities with SuperNode keys (node config
``identity-key``); the resumed cloud meets them under new node ids. A node that names ES 0's
identity and public facts with another key, or that replays ES 0's recorded reply, gets no
engagement and no held pay: it is refused with its reason (an ``incompatible`` row, logged),
and ES 0's held pay is forfeited when the epoch closes without it. No private key reaches the
ledger, the checkpoints or the logs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

import tests.strategies.fake_grid as fake_grid
from clients.edge_server import EdgeServer
from fed_agent.checkpoints import checkpoint_root
from fed_agent.config import config_from_run_config
from fed_agent.deploy.certs import generate_node_keys
from fed_agent.es_keys import load_identity_key, public_key_text
from fed_agent.protocol import IDENTITY_KEY, PUBLIC_FACTS
from strategies.records import adapter_to_record
from tests.strategies.test_contract_strategy import NODES, make_strategy
from tests.strategies.test_escrow_epochs import (
    HOLDING,
    give_keys,
    honest_round,
    resume,
    rows_of,
)

OVERRIDES = f"{HOLDING} federation.num_rounds=2"
NEW_IDS = [201, 202, 203]


def _first_run(tmp_path, module):
    """Round 1 of 2 by ESs that prove their identities with SuperNode keys, checkpointed;
    the held pay by node id and the key files (one more for an impostor)."""
    keys = [k.private_key for k in generate_node_keys(tmp_path / "keys", len(NODES) + 1)]
    strategy, grid = make_strategy(
        tmp_path, module, OVERRIDES, checkpoint_dir=checkpoint_root(tmp_path / "run")
    )
    give_keys(grid, keys[: len(NODES)])
    honest_round(strategy, grid, module, 1, adapter_to_record(module.initial_state))
    held = {e.node_id: e.held for e in rows_of(strategy)}
    assert sorted(held) == NODES and all(h > 0 for h in held.values())
    return held, keys


def _assert_es0_lost_its_engagement(resumed, held, reason):
    rows_201 = [e for e in resumed.ledger.entries if e.node_id == 201]
    assert [e.status for e in rows_201] == ["incompatible"]
    assert reason in rows_201[0].reason
    assert rows_201[0].paid == 0 and rows_201[0].released == 0 and rows_201[0].held == 0
    released = {e.node_id: e.released for e in rows_of(resumed) if e.round == 2}
    assert sorted(released) == [202, 203]
    assert released[202] == pytest.approx(held[NODES[1]])
    forfeits = {e.node_id: e.forfeited for e in rows_of(resumed, "forfeit")}
    assert forfeits == {NODES[0]: pytest.approx(held[NODES[0]])}
    assert 201 not in resumed.engagements and 201 not in resumed.recruiter.identities.by_node


def test_a_node_with_another_key_gets_no_rebinding_and_no_held_pay(tmp_path, smoke_module, caplog):
    held, keys = _first_run(tmp_path, smoke_module)
    resumed, grid, arrays = resume(tmp_path, smoke_module, OVERRIDES, NEW_IDS)
    # 201 holds partition 0 (same identity, same public facts) but not ES 0's key
    give_keys(grid, [keys[3], keys[1], keys[2]])
    with caplog.at_level(logging.WARNING, logger="strategies.recruiter"):
        honest_round(resumed, grid, smoke_module, 1, arrays)
    impostor_key = public_key_text(load_identity_key(keys[3]))
    _assert_es0_lost_its_engagement(resumed, held, "names ES partition-0-of-3 with key SHA256:")
    warnings = [r.getMessage() for r in caplog.records if "names ES partition-0-of-3" in r.message]
    assert len(warnings) == 1 and "node 201" in warnings[0] and impostor_key not in warnings[0]


def test_a_replay_of_the_honest_reply_proves_nothing(tmp_path, smoke_module, monkeypatch):
    held, keys = _first_run(tmp_path, smoke_module)
    resumed, grid, arrays = resume(tmp_path, smoke_module, OVERRIDES, NEW_IDS)
    give_keys(grid, keys[: len(NODES)])
    # 201 answers with a reply ES 0 signed for another challenge (one it could have recorded)
    context = grid.contexts[201]
    es0 = EdgeServer.from_node_config(
        config_from_run_config(context.run_config), context.node_config
    )
    recorded = es0.public_facts("a challenge of the first run")
    honest_query = fake_grid.query

    def replaying(message, context):
        if message.metadata.dst_node_id == 201:
            return Message(RecordDict({PUBLIC_FACTS: ConfigRecord(recorded)}), reply_to=message)
        return honest_query(message, context)

    monkeypatch.setattr(fake_grid, "query", replaying)
    honest_round(resumed, grid, smoke_module, 1, arrays)
    _assert_es0_lost_its_engagement(
        resumed, held, "its proof of identity partition-0-of-3 does not verify"
    )


def test_a_missing_key_file_is_one_refusal_and_never_asked_again(tmp_path, smoke_module):
    strategy, grid = make_strategy(tmp_path, smoke_module, OVERRIDES)
    grid.contexts[NODES[1]].node_config[IDENTITY_KEY] = str(tmp_path / "no-such-key")
    arrays = adapter_to_record(smoke_module.initial_state)
    for flower_round in (1, 2):
        arrays = honest_round(strategy, grid, smoke_module, flower_round, arrays)
    rows = [e for e in strategy.ledger.entries if e.node_id == NODES[1]]
    assert [(e.round, e.status) for e in rows] == [(1, "incompatible")]
    assert rows[0].reason == (
        "cannot answer the contract protocol: node config identity-key: no such file"
    )
    assert sum(m.metadata.dst_node_id == NODES[1] for m in grid.sent) == 1
    assert sorted({e.node_id for e in rows_of(strategy)}) == [NODES[0], NODES[2]]


def _secrets(key_files: list[Path]) -> list[str]:
    """Texts that would give a key away: each key's private number (decimal and hex) and
    the base64 lines of its key file."""
    texts = []
    for path in key_files:
        number = load_identity_key(path).private_numbers().private_value
        texts += [str(number), f"{number:x}"]
        texts += [line for line in path.read_text().splitlines() if "PRIVATE KEY" not in line]
    return [t for t in texts if t]


def test_no_private_key_reaches_the_ledger_checkpoints_or_logs(tmp_path, smoke_module, caplog):
    with caplog.at_level(logging.DEBUG):
        held, keys = _first_run(tmp_path, smoke_module)
        resumed, grid, arrays = resume(tmp_path, smoke_module, OVERRIDES, NEW_IDS)
        give_keys(grid, keys[: len(NODES)])
        honest_round(resumed, grid, smoke_module, 1, arrays)
    assert {e.node_id for e in rows_of(resumed) if e.round == 2} == set(NEW_IDS)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "keys" not in p.parts]
    text = "\n".join(p.read_bytes().decode("latin-1") for p in written)
    assert {"ledger.csv", "state.json"} <= {p.name for p in written}
    # the checkpoint keeps the public keys, which prove nothing without the private ones
    assert all(public_key_text(load_identity_key(k)) in text for k in keys[: len(NODES)])
    logs = caplog.text
    assert "is ES partition-0-of-3, known before as node 101" in logs
    for secret in _secrets(keys):
        assert secret not in text and secret not in logs
