"""Held pay, selection and the ledger over a resume at every round boundary of an epoch.

A run of the real ContractStrategy (offers answered by the real ClientApp handlers on the fake
grid, a checkpoint every round) is resumed after each of its rounds, the way the ServerApp
resumes (``resume_point`` + ``restore``), on a grid where Flower gave the same ESs new node
ids. Its ledger must be the uninterrupted run's, row by row, with the new ids from the
resumed rounds on: held pay accumulates over the period-1 rounds and is released once, and
every choice that depends on an ES's history (its earlier rounds of work) follows the ES, not
its node id.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from flwr.app import ConfigRecord

from strategies.records import adapter_to_record
from tests.strategies.fake_grid import FakeGrid, set_task_identity
from tests.strategies.test_contract_strategy import NODES, honest_updates, reply_for
from tests.strategies.test_round_commit import build_server

RENUMBERED = 100
"""A restart adds this to every node id (node 101 comes back as 201)."""


def _overrides(rounds_per_period: int, num_rounds: int, extra: str = "") -> str:
    return (
        "incentive=complete_information federation.fold_offers=false "
        f"incentive.rounds_per_period={rounds_per_period} federation.num_rounds={num_rounds} "
        f"{extra}"
    )


def _server(parent, overrides: str, module, resume_from=None):
    return build_server(parent, "run", overrides, module, resume_from or "")


def _drive(strategy, grid, module, state, copies=None) -> None:
    """The rest of the run; with ``copies``, the run folder is copied after each round."""
    arrays = adapter_to_record(state)
    for server_round in range(1, 1 + strategy.cfg.federation.num_rounds - strategy.round_offset):
        absolute = strategy.absolute_round(server_round)
        set_task_identity(0)
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        updates = honest_updates(module, messages, seed=absolute)
        replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
        new, _ = strategy.aggregate_train(server_round, replies)
        arrays = arrays if new is None else new
        if copies is not None:
            shutil.copytree(strategy.outputs.root, copies / f"after-{absolute}")


def _ledger(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "ledger.csv").drop(columns=["wall_s"])  # reported by the ES


@pytest.mark.parametrize(
    ("rounds_per_period", "num_rounds", "extra"),
    [
        (2, 4, "incentive.repeat_value=0.5"),
        (3, 6, "incentive.repeat_value=0.5"),
        (2, 4, "incentive.repeat_value=0.5 federation.es_per_round=2"),
    ],
)
def test_a_resume_under_new_node_ids_at_any_boundary_keeps_the_uninterrupted_ledger(
    tmp_path, smoke_module, rounds_per_period, num_rounds, extra
):
    overrides = _overrides(rounds_per_period, num_rounds, extra)
    strategy, start = _server(tmp_path / "whole", overrides, smoke_module)
    copies = tmp_path / "copies"
    _drive(strategy, FakeGrid(NODES, "smoke", overrides), smoke_module, start, copies)
    whole = _ledger(strategy.outputs.root)
    assert whole["held"].sum() > 0
    assert whole["released"].sum() == pytest.approx(whole["held"].sum())
    for done in range(1, num_rounds):
        smoke_module.reset()
        resumed, state = _server(
            tmp_path / f"resumed-{done}", overrides, smoke_module, copies / f"after-{done}"
        )
        grid = FakeGrid([n + RENUMBERED for n in NODES], "smoke", overrides)
        _drive(resumed, grid, smoke_module, state)
        expected = whole.copy()
        expected.loc[expected["round"] > done, "node_id"] += RENUMBERED
        pd.testing.assert_frame_equal(_ledger(resumed.outputs.root), expected, check_dtype=False)


@pytest.mark.parametrize("done", [1, 2], ids=["mid-period-1", "at-the-period-switch"])
def test_an_es_gone_at_a_restart_before_period_2_forfeits_exactly_its_held_pay(
    tmp_path, smoke_module, done
):
    overrides = _overrides(2, 4)
    strategy, start = _server(tmp_path / "first", overrides, smoke_module)
    copies = tmp_path / "copies"
    _drive(strategy, FakeGrid(NODES, "smoke", overrides), smoke_module, start, copies)
    smoke_module.reset()
    resumed, state = _server(
        tmp_path / "resumed", overrides, smoke_module, copies / f"after-{done}"
    )
    grid = FakeGrid([n + RENUMBERED for n in NODES], "smoke", overrides)
    grid.node_ids = grid.node_ids[:2]  # the ES of partition 2 does not come back
    _drive(resumed, grid, smoke_module, state)
    ledger = _ledger(resumed.outputs.root)
    held = ledger.groupby("node_id")["held"].sum()
    gone = ledger[ledger["status"] == "forfeit"]
    assert list(gone["node_id"]) == [NODES[2]] and list(gone["round"]) == [4]
    assert gone["forfeited"].item() == pytest.approx(held[NODES[2]])
    first = ledger[(ledger["round"] == 1) & (ledger["node_id"] == NODES[2])]
    assert held[NODES[2]] == pytest.approx(done * first["reward_offered"].item())  # per round
    stayed = ledger[(ledger["round"] == 4) & (ledger["status"] == "paid")]
    assert sorted(stayed["node_id"]) == [NODES[0] + RENUMBERED, NODES[1] + RENUMBERED]
    for _, row in stayed.iterrows():  # what each held under either node id, released once
        old = row["node_id"] - RENUMBERED
        assert row["released"] == pytest.approx(held[old] + held.get(row["node_id"], 0.0))
    assert ledger["forfeited"].sum() == pytest.approx(held[NODES[2]])
    assert ledger["held"].sum() == pytest.approx(ledger["released"].sum() + gone["forfeited"].sum())
