"""No private type leak: after a round, the cloud's records are a function of an ES's contract
choice, never of its type beyond what that choice reveals.

One ES is given each willingness type in turn while it answers the offer as one fixed type
would (the same choice). Everything the cloud keeps after the round -- the ledger, the
metrics row, its beliefs and contracts, the new module -- must then be identical: whatever
the cloud could infer from its records it could infer from the choice alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, Message

import fed_agent.modules.training as training
from clients.client_app import train
from clients.edge_server import EdgeServer
from fed_agent.config import load_config
from fed_agent.incentives.profiles import WILLINGNESS_TYPE, Willingness
from strategies.records import adapter_to_record, record_to_adapter
from tests.strategies.fake_grid import metadata, set_task_identity
from tests.strategies.test_contract_strategy import NODES, make_strategy

CHOOSER_TYPE = 1
"""The type whose choice the observed ES makes, whatever its true type."""
TIMINGS = ("design_s", "guard_s", "round_wall_s")


REAL_TRAINING = training.train_locally


def _fixed_wall_training(module, examples, cfg, steps, seed):
    """Real local training (type-independent: the ES's data and seed), its wall time fixed:
    the one self-reported figure that varies from run to run."""
    report = REAL_TRAINING(module, examples, cfg, steps, seed)
    return dataclasses.replace(report, wall_s=0.25)


def _cloud_records(tmp_path, module, monkeypatch, true_type: int, fold: bool) -> dict:
    """Run one round with the first ES of type ``true_type``; what the cloud keeps.

    ``fold``: offers ride on the TRAIN messages (the ES picks and trains in one message)."""
    original = EdgeServer.answer_offer

    def answer_as_chooser(self, offer):
        if self.partition_id == 0:
            self = dataclasses.replace(
                self, willingness=Willingness(CHOOSER_TYPE, self.willingness.chain_seed)
            )
        return original(self, offer)

    monkeypatch.setattr(EdgeServer, "answer_offer", answer_as_chooser)
    monkeypatch.setattr(training, "train_locally", _fixed_wall_training)
    strategy, grid = make_strategy(
        tmp_path / f"type{true_type}-{fold}", module, "incentive=optimal", fold=fold
    )
    observed = grid.contexts[NODES[0]]
    observed.node_config[WILLINGNESS_TYPE] = true_type
    es = EdgeServer.from_node_config(strategy.cfg, observed.node_config)
    assert es.type_in_round(1, es.market()) == true_type

    module.reset()
    set_task_identity(0)
    arrays = adapter_to_record(module.initial_state)
    messages = list(strategy.configure_train(1, arrays, ConfigRecord(), grid))
    replies = []
    for i, message in enumerate(messages):
        dst = message.metadata.dst_node_id
        addressed = Message(content=message.content, metadata=metadata(0, dst, "train", f"t{i}"))
        set_task_identity(dst)
        try:
            replies.append(train(addressed, grid.contexts[dst]))
        finally:
            set_task_identity(0)
    new_arrays, round_metrics = strategy.aggregate_train(1, replies)
    ledger = strategy.ledger.frame().sort_values(["round", "node_id"]).reset_index(drop=True)
    row = {k: v for k, v in strategy.outputs.rows[-1].items() if k not in TIMINGS}
    return {
        "ledger": ledger,
        "row": row,
        "state": strategy.state_dict(),
        "metrics": dict(round_metrics),
        "module": record_to_adapter(new_arrays),
        "observed_item": strategy.engagements[NODES[0]].report,
    }


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fold", [False, True], ids=["offer-query", "offer-in-train"])
def test_the_clouds_records_reveal_no_more_than_the_contract_choice(
    tmp_path, smoke_module, monkeypatch, fold
):
    records = {
        t: _cloud_records(tmp_path, smoke_module, monkeypatch, t, fold)
        for t in range(load_config("smoke").market.num_types)
    }
    reference = records[CHOOSER_TYPE]
    assert reference["observed_item"] is not None  # the ES took an item and was paid
    paid = reference["ledger"]
    assert (paid.loc[paid.node_id == NODES[0], "status"] == "paid").all()
    for true_type, rec in records.items():
        assert rec["observed_item"] == reference["observed_item"]
        pd.testing.assert_frame_equal(rec["ledger"], reference["ledger"], obj=f"type {true_type}")
        assert rec["row"] == reference["row"]
        assert rec["state"] == reference["state"]
        assert rec["metrics"] == reference["metrics"]
        for key, value in rec["module"].items():
            np.testing.assert_array_equal(value, reference["module"][key])
