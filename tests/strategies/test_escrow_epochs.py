"""Held pay over epochs of several rounds a period, and across a restart with new node ids.

Under ex ante participation the period-1 pay a contract pays is held until the period-2 work
is delivered. With several rounds a period it adds up and is released once, in the epoch's
closing round; after a restart the ESs come back under new Flower node ids, report the same
stable identity and public facts, prove the identity with the same key (a key file in the
node config, or the simulated key), and are paid what they held.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from flwr.app import ConfigRecord

from fed_agent.checkpoints import checkpoint_root, load_latest
from fed_agent.config import load_config
from fed_agent.deploy.certs import generate_node_keys
from fed_agent.incentives.ledger import Ledger
from fed_agent.incentives.policies import make_policy
from fed_agent.outputs import RunOutputs
from fed_agent.protocol import IDENTITY_KEY
from strategies.contract_strategy import ContractStrategy
from strategies.records import adapter_to_record
from tests.strategies.fake_grid import FakeGrid, set_task_identity
from tests.strategies.test_contract_strategy import (
    NODES,
    honest_updates,
    make_strategy,
    reply_for,
)

HOLDING = "incentive=complete_information"
"""A policy whose contracts are not in the deferred form: they pay (and hold) in period 1."""


def honest_round(strategy, grid, module, flower_round, arrays):
    set_task_identity(0)
    messages = list(strategy.configure_train(flower_round, arrays, ConfigRecord(), grid))
    updates = honest_updates(module, messages, seed=flower_round)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    new_arrays, _ = strategy.aggregate_train(flower_round, replies)
    return new_arrays or arrays


def rows_of(strategy, status="paid"):
    return [e for e in strategy.ledger.entries if e.status == status]


def test_two_rounds_a_period_pay_honest_ess_in_full_once_per_epoch(tmp_path, smoke_module):
    overrides = f"{HOLDING} incentive.rounds_per_period=2 federation.num_rounds=4"
    strategy, grid = make_strategy(tmp_path, smoke_module, overrides)
    arrays = adapter_to_record(smoke_module.initial_state)
    for flower_round in (1, 2, 3, 4):
        arrays = honest_round(strategy, grid, smoke_module, flower_round, arrays)
        if flower_round == 2:  # two period-1 rounds of held pay, added up
            for node in NODES:
                held = [e.held for e in rows_of(strategy) if e.node_id == node]
                assert held[0] > 0 and strategy.engagements[node].held == pytest.approx(sum(held))
    assert rows_of(strategy, "forfeit") == [] and all(e.forfeited == 0 for e in rows_of(strategy))
    by_round = defaultdict(dict)
    for e in rows_of(strategy):
        by_round[e.round][e.node_id] = e
    assert all(sorted(by_round[r]) == NODES for r in (1, 2, 3, 4))
    for node in NODES:
        period1 = [by_round[r][node] for r in (1, 2)]
        assert all(e.paid == 0 and e.held == pytest.approx(e.reward_offered) for e in period1)
        # period 2: the first round pays its reward, the closing round releases the held pay
        assert by_round[3][node].released == 0
        assert by_round[3][node].paid == pytest.approx(by_round[3][node].reward_offered)
        assert by_round[4][node].released == pytest.approx(sum(e.held for e in period1))
        earned = sum(by_round[r][node].reward_offered for r in (1, 2, 3, 4))
        assert sum(by_round[r][node].paid for r in (1, 2, 3, 4)) == pytest.approx(earned)
        assert strategy.engagements[node].held == 0


def resume(tmp_path, module, overrides, node_ids):
    """A strategy resumed from the newest checkpoint, on a grid of new node ids (the i-th
    still holds partition i), as ``strategies.server_app`` builds it."""
    run = tmp_path / "run"
    checkpoint = load_latest(checkpoint_root(run))
    cfg = load_config("smoke", f"{overrides} federation.fold_offers=false")
    outputs = RunOutputs.create(str(tmp_path / "resumed"), "run")
    (outputs.root / "ledger.csv").write_text(checkpoint.ledger_csv)
    strategy = ContractStrategy(
        cfg,
        module,
        outputs,
        make_policy(cfg.incentive, cfg.market.num_types, cfg.market.commitment),
        Ledger(outputs.root / "ledger.csv"),
        round_offset=checkpoint.server_round,
        saved_state=checkpoint.state,
    )
    grid = FakeGrid(node_ids, "smoke", f"{overrides} federation.fold_offers=false")
    return strategy, grid, adapter_to_record(checkpoint.adapter)


def give_keys(grid, key_files) -> None:
    """Node i of the grid proves its identity with ``key_files[i]`` (node config)."""
    for node, key_file in zip(grid.node_ids, key_files, strict=True):
        grid.contexts[node].node_config[IDENTITY_KEY] = str(key_file)


@pytest.mark.parametrize("key_files", [False, True], ids=["simulated-keys", "key-files"])
def test_a_resume_with_new_node_ids_releases_the_held_pay_to_the_same_ess(
    tmp_path, smoke_module, key_files
):
    overrides = f"{HOLDING} federation.num_rounds=2"
    strategy, grid = make_strategy(
        tmp_path, smoke_module, overrides, checkpoint_dir=checkpoint_root(tmp_path / "run")
    )
    keys = [k.private_key for k in generate_node_keys(tmp_path / "keys", len(NODES))]
    if key_files:
        give_keys(grid, keys)
    honest_round(strategy, grid, smoke_module, 1, adapter_to_record(smoke_module.initial_state))
    held = {e.node_id: e.held for e in rows_of(strategy)}
    assert sorted(held) == NODES and all(h > 0 for h in held.values())

    new_ids = [201, 202, 203]  # a restart: Flower gives the same ESs new node ids
    resumed, grid, arrays = resume(tmp_path, smoke_module, overrides, new_ids)
    if key_files:
        give_keys(grid, keys)
    honest_round(resumed, grid, smoke_module, 1, arrays)
    second = {e.node_id: e for e in rows_of(resumed) if e.round == 2}
    assert sorted(second) == new_ids
    for old, new in zip(NODES, new_ids, strict=True):
        assert second[new].released == pytest.approx(held[old])
        assert second[new].paid == pytest.approx(second[new].reward_offered + held[old])
    assert rows_of(resumed, "forfeit") == []
    assert all(e.forfeited == 0 for e in resumed.ledger.entries)


def test_a_new_node_with_other_public_facts_gets_no_saved_engagement(tmp_path, smoke_module):
    overrides = f"{HOLDING} federation.num_rounds=2"
    strategy, grid = make_strategy(
        tmp_path, smoke_module, overrides, checkpoint_dir=checkpoint_root(tmp_path / "run")
    )
    honest_round(strategy, grid, smoke_module, 1, adapter_to_record(smoke_module.initial_state))
    held = {e.node_id: e.held for e in rows_of(strategy)}

    resumed, grid, arrays = resume(tmp_path, smoke_module, overrides, [201, 202, 203])
    # node 201 names partition 0's identity but another workload: not the same ES
    grid.contexts[201].node_config["workload-gcycles"] = 7.5
    honest_round(resumed, grid, smoke_module, 1, arrays)
    released = {e.node_id: e.released for e in rows_of(resumed) if e.round == 2}
    assert sorted(released) == [202, 203]
    forfeits = {e.node_id: e.forfeited for e in rows_of(resumed, "forfeit")}
    assert forfeits == {NODES[0]: pytest.approx(held[NODES[0]])}


@pytest.mark.parametrize("rounds_per_period, num_rounds", [(1, 3), (2, 2), (2, 5), (2, 6)])
def test_an_epoch_the_run_cannot_finish_is_offered_per_period(
    tmp_path, smoke_module, rounds_per_period, num_rounds
):
    # ex ante, a guarded offer defers period-1 pay into period 2 (the least willing type's
    # period-1 item paid 0 and its work was to be paid by its period-2 items): an epoch whose
    # period 2 falls after the run's last round is offered per period, each item paying its
    # own work in its own period
    overrides = (
        f"incentive=optimal incentive.rounds_per_period={rounds_per_period} "
        f"federation.num_rounds={num_rounds}"
    )
    strategy, grid = make_strategy(tmp_path, smoke_module, overrides)
    arrays = adapter_to_record(smoke_module.initial_state)
    rules = []
    for flower_round in range(1, num_rounds + 1):
        arrays = honest_round(strategy, grid, smoke_module, flower_round, arrays)
        rules.append({e.market.participation for e in strategy.engagements.values()})
    epoch = 2 * rounds_per_period
    last_epoch = (num_rounds - 1) // epoch * epoch + 1  # period 1 only, in this run
    assert rules[: last_epoch - 1] == [{"ex_ante"}] * (last_epoch - 1)
    assert rules[last_epoch - 1 :] == [{"per_period"}] * (num_rounds - last_epoch + 1)
    for node in NODES:
        engagement = strategy.engagements[node]
        nothing_deferred = engagement.deferred is None or not engagement.deferred.any()
        assert nothing_deferred and engagement.held == 0
        rows = [e for e in rows_of(strategy) if e.node_id == node and e.round >= last_epoch]
        assert [e.round for e in rows] == list(range(last_epoch, num_rounds + 1))  # all work
        for row in rows:  # paid in its round, and at least what the work costs its type
            reward = float(engagement.contract.r1[row.item])
            assert row.paid == pytest.approx(reward) and row.es_utility >= -1e-6 * reward
            assert reward > 1.0


def test_a_run_cut_short_in_period_one_pays_the_deferred_pay_of_its_period_one_work(
    tmp_path, smoke_module
):
    # an epoch offered in full (period 2: rounds 3-4) in a run that then ends in period 1 (a
    # resume with federation.num_rounds=2 after round 1): the last round pays the deferred
    # pay of both period-1 rounds of work, there being no period 2 to pay it
    overrides = "incentive=optimal incentive.rounds_per_period=2 federation.num_rounds=4"
    strategy, grid = make_strategy(tmp_path, smoke_module, overrides)
    arrays = honest_round(
        strategy, grid, smoke_module, 1, adapter_to_record(smoke_module.initial_state)
    )
    strategy.cfg.federation.num_rounds = 2  # as a resume with fewer rounds does
    honest_round(strategy, grid, smoke_module, 2, arrays)
    deferred_paid = []
    for node in NODES:
        rows = [e for e in rows_of(strategy) if e.node_id == node]
        assert [e.round for e in rows] == [1, 2]
        engagement = strategy.engagements[node]
        assert engagement.market.participation == "ex_ante"
        deferred = float(engagement.deferred[engagement.report])
        period1_pay = sum(float(engagement.contract.r1[e.item]) for e in rows)
        assert sum(e.paid for e in rows) == pytest.approx(period1_pay + deferred)
        assert rows[-1].paid == pytest.approx(rows[-1].reward_offered)  # all in the last round
        deferred_paid.append(deferred)
    assert max(deferred_paid) > 1.0  # the check bites: deferred pay was owed


def test_two_connected_nodes_naming_one_es_get_one_contract(tmp_path, smoke_module):
    # the second node holds partition 0 as well: the same identity, proved with the same key
    strategy, grid = make_strategy(tmp_path, smoke_module, f"{HOLDING} federation.num_rounds=2")
    grid.contexts[NODES[2]].node_config["partition-id"] = 0
    honest_round(strategy, grid, smoke_module, 1, adapter_to_record(smoke_module.initial_state))
    twin, original = max(NODES[0], NODES[2]), min(NODES[0], NODES[2])
    assert sorted(e.node_id for e in rows_of(strategy)) == sorted({original, NODES[1]})
    (refused,) = rows_of(strategy, "incompatible")
    assert refused.node_id == twin and refused.held == refused.paid == 0
    assert f"which connected node {original} already is" in refused.reason
    assert twin not in strategy.engagements
