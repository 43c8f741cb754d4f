"""``market.commitment=renegotiation_proof`` in the federation: the guard offers every ES the
exact renegotiation-proof contract (deferred under ex ante), the ES signs it, and its
period-2 row is what the ES is offered and paid after its report."""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import renegotiation_proof_contract
from fed_agent.contracts.escrow import defer_pay
from fed_agent.contracts.renegotiation import renegotiation_gain
from fed_agent.incentives.guard import EXACT
from strategies.records import adapter_to_record
from tests.strategies.test_contract_strategy import NODES, make_strategy
from tests.strategies.test_escrow_epochs import honest_round


@pytest.mark.parametrize("policy", ["optimal", "edmsac"])
def test_every_es_signs_the_renegotiation_proof_contract_and_keeps_its_row(
    tmp_path, smoke_module, policy
):
    overrides = f"incentive={policy} market.commitment=renegotiation_proof"
    strategy, grid = make_strategy(tmp_path, smoke_module, overrides)
    assert strategy.cfg.market.participation == "ex_ante"
    arrays = adapter_to_record(smoke_module.initial_state)
    arrays = honest_round(strategy, grid, smoke_module, 1, arrays)
    signed = {}
    for node in NODES:
        engagement = strategy.engagements[node]
        assert engagement.source == EXACT and engagement.report is not None
        proof = renegotiation_proof_contract(engagement.market).contract
        expected = defer_pay(proof, engagement.market)
        for name in ("f1", "r1", "f2", "r2"):
            np.testing.assert_allclose(getattr(engagement.contract, name), getattr(expected, name))
        assert abs(renegotiation_gain(proof, engagement.market).gain) < 1e-8
        signed[node] = (engagement.contract, engagement.report)
    honest_round(strategy, grid, smoke_module, 2, arrays)
    period2 = [e for e in strategy.ledger.entries if e.round == 2 and e.status == "paid"]
    assert {e.node_id for e in period2} == set(NODES)
    for entry in period2:  # the signed row of its report, as signed
        contract, report = signed[entry.node_id]
        assert entry.offer_source == EXACT
        assert entry.reward_offered == pytest.approx(contract.r2[report, entry.item])
        assert entry.f_ghz == pytest.approx(contract.f2[report, entry.item])
