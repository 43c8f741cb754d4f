"""A round commits atomically: a ServerApp that dies at any point of a round never pays twice.

A 3-round run of the real ContractStrategy (offers answered by the real ClientApp handlers on
the fake grid, checkpointing every round as the ServerApp does) is made to die at one point of
round 2, then resumed the way the ServerApp resumes (``resume_point`` + ``restore``) from the
dead run's folder. The ledger of the dead run may only hold committed rounds, and the resumed
run's ledger must equal the ledger of the same run never interrupted: every payment once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord

import fed_agent.checkpoints as checkpoints
from fed_agent.checkpoints import checkpoint_root, load_latest, resume_point
from fed_agent.config import load_config
from fed_agent.incentives.ledger import Ledger
from fed_agent.incentives.policies import make_policy
from fed_agent.outputs import RunOutputs
from strategies.contract_book import ContractBook
from strategies.contract_strategy import ContractStrategy
from strategies.records import adapter_to_record, record_to_adapter
from strategies.server_app import restore
from tests.strategies.fake_grid import FakeGrid, set_task_identity
from tests.strategies.test_contract_strategy import NODES, honest_updates, reply_for

OVERRIDES = "incentive=optimal federation.num_rounds=3"
CRASH_ROUND = 2
PAY_COLUMNS = ["round", "node_id", "status", "item", "paid", "held", "released", "forfeited"]


class Crash(RuntimeError):
    """The ServerApp process dies here."""


def _server(parent, run_name: str, module, resume_from: str = ""):
    return build_server(parent, run_name, OVERRIDES, module, resume_from)


def build_server(parent, run_name: str, overrides: str, module, resume_from: str = ""):
    """What the ServerApp builds: the checkpoint (read first), the run folder, the strategy."""
    if resume_from:
        overrides = f"{overrides} federation.resume_from={resume_from}"
    cfg = load_config("smoke", overrides)
    checkpoint = resume_point(cfg)
    outputs = RunOutputs.create(str(parent), run_name)
    if checkpoint is not None:
        restore(checkpoint, outputs)
    strategy = ContractStrategy(
        cfg,
        module,
        outputs,
        make_policy(cfg.incentive, cfg.market.num_types, cfg.market.commitment),
        Ledger(outputs.root / "ledger.csv"),
        round_offset=0 if checkpoint is None else checkpoint.server_round,
        checkpoint_dir=checkpoint_root(outputs.root),
        saved_state=None if checkpoint is None else checkpoint.state,
    )
    start = module.initial_state if checkpoint is None else checkpoint.adapter
    return strategy, start


def _drive(strategy, grid, module, state, crash_at: str = ""):
    """Flower's rounds 1.. of this run up to ``num_rounds``; replies are honest updates.

    ``crash_at``: ``after configure`` (round 2's instructions sent, no reply yet) or ``round end``
    (round 2 aggregated and committed, round 3 not begun) raise :class:`Crash` there."""
    arrays = adapter_to_record(state)
    for server_round in range(1, 1 + strategy.cfg.federation.num_rounds - strategy.round_offset):
        absolute = strategy.absolute_round(server_round)
        set_task_identity(0)
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        if crash_at == "after configure" and absolute == CRASH_ROUND:
            raise Crash("after the offers and TRAIN instructions, before any reply")
        updates = honest_updates(module, messages, seed=absolute)
        replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
        new, _ = strategy.aggregate_train(server_round, replies)
        arrays = arrays if new is None else new
        if crash_at == "round end" and absolute == CRASH_ROUND:
            raise Crash("after the round, before the next one")
    return record_to_adapter(arrays)


def _ledger(run_dir) -> pd.DataFrame:
    path = run_dir / "ledger.csv"
    return pd.read_csv(path)[PAY_COLUMNS] if path.is_file() else pd.DataFrame(columns=PAY_COLUMNS)


def _crash_on_call(monkeypatch, owner, name: str, call: int) -> None:
    """Make ``owner.name`` raise on its ``call``-th call of the run."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise Crash(f"inside {name}, call {call}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, crashing)


# (where, the patch that dies there, the last round committed when it dies); each of these
# functions is called once a round, ContractBook.pay once per paid ES (3 a round)
CRASH_POINTS = {
    "after configure": (None, 1),
    "between two payments": ((ContractBook, "pay", 3 + 2), 1),
    "writing the checkpoint's files": ((checkpoints, "save_adapter", CRASH_ROUND), 1),
    "checkpoint renamed, LATEST.json not yet": ((checkpoints, "write_json_atomic", 2), 1),
    "checkpoint complete, ledger.csv not yet": ((Ledger, "write", CRASH_ROUND), CRASH_ROUND),
    "round end": (None, CRASH_ROUND),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, smoke_cfg):
    """The ledger and final module of the run never interrupted."""
    from fed_agent.modules.adapter import agent_module

    module = agent_module(smoke_cfg.model, smoke_cfg.seed)
    module.reset()
    parent = tmp_path_factory.mktemp("reference")
    strategy, start = _server(parent, "run", module)
    final = _drive(strategy, FakeGrid(NODES, "smoke", OVERRIDES), module, start)
    module.reset()
    return _ledger(strategy.outputs.root), final


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_run_killed_at_any_point_of_a_round_resumes_without_paying_twice(
    tmp_path, smoke_module, monkeypatch, reference, point
):
    expected_ledger, expected_final = reference
    assert (expected_ledger["status"] == "paid").sum() == 9  # 3 ESs x 3 rounds
    grid = FakeGrid(NODES, "smoke", OVERRIDES)  # the ESs live on; only the ServerApp dies
    strategy, start = _server(tmp_path, "run", smoke_module)
    patch, expected_committed = CRASH_POINTS[point]
    with monkeypatch.context() as mp:
        if patch is not None:
            _crash_on_call(mp, *patch)
        with pytest.raises(Crash):
            _drive(strategy, grid, smoke_module, start, crash_at=point)
    dead = strategy.outputs.root
    committed = load_latest(dead).server_round
    assert committed == expected_committed
    on_disk = _ledger(dead)
    # nothing of an uncommitted round is ever on disk as final
    assert (on_disk["round"] <= committed).all()

    resumed, state = _server(tmp_path, "resumed", smoke_module, resume_from=str(dead))
    final = _drive(resumed, grid, smoke_module, state)
    ledger = _ledger(resumed.outputs.root)
    pd.testing.assert_frame_equal(ledger, expected_ledger, check_dtype=False)
    paid = ledger[ledger["status"] == "paid"]
    assert not paid.duplicated(["round", "node_id"]).any()
    assert paid["paid"].sum() == pytest.approx(expected_ledger["paid"].sum())
    # what the dead run wrote is a prefix of what the resumed run pays: paid once in all
    assert len(on_disk) <= len(ledger[ledger["round"] <= committed])
    for key in final:
        np.testing.assert_allclose(final[key], expected_final[key], rtol=1e-6, atol=1e-8)
