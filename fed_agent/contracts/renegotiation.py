"""What the cloud would gain by re-offering period 2 after the reports (its commitment).

The contract model has the cloud commit at signing to the period-2 menu of every history.
Once the period-1 reports are in, the cloud knows each ES's period-1 type i (a separating
contract), so its belief about the period-2 type is P[i, .]; re-offering period 2 as the
one-period screening optimum for that belief (each type free to leave, per period IR) is
worth more to the cloud ex post. The difference is the value of breaking the commitment: an
ES that anticipated it would no longer report truthfully in period 1, which is why the
federation must keep the signed period-2 menu (docs/contract-model.md, "What an ES is
guaranteed"), or sign the renegotiation-proof contract
(``solvers.renegotiation_proof_contract``), whose gain is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fed_agent.contracts.contract import DynamicContract
from fed_agent.contracts.market import Market
from fed_agent.contracts.solvers.renegotiation_proof import period2_optimum
from fed_agent.contracts.utility import value_of_work


@dataclass(frozen=True)
class RenegotiationGain:
    """The committed contract's value and the ex post value of re-offering period 2.

    Attributes
    ----------
    committed : float
        Expected cloud utility per ES of the signed contract.
    reoffered : float
        The same with every history's period-2 menu replaced by the one-period optimum for
        the belief P[i, .] (period 1 as signed).
    period2_values : np.ndarray
        (K,) the one-period optimum per history i, per ES of that history.
    """

    committed: float
    reoffered: float
    period2_values: np.ndarray

    @property
    def gain(self) -> float:
        """(reoffered - committed) / |committed|."""
        return (self.reoffered - self.committed) / abs(self.committed)


def period2_reoffer_value(market: Market, belief: np.ndarray, exclusion: bool = False) -> float:
    """The one-period screening optimum of ``market``'s period-2 economics for ``belief``
    (per period IR: an ES may leave), per ES; ``exclusion``: types may get the exit."""
    return period2_optimum(market, belief, exclusion)[2]


def renegotiation_gain(
    contract: DynamicContract, market: Market, exclusion: bool = False
) -> RenegotiationGain:
    """The value of re-offering period 2 after truthful period-1 reports (see the module
    docstring); ``contract`` is the signed contract, e.g. the exact optimum; ``exclusion``:
    the re-offer may exclude types."""
    k = market.num_types
    g1, g2 = value_of_work(contract.f1, market), value_of_work(contract.f2, market)
    period1 = market.prior @ (g1 - contract.r1)
    committed_2 = np.array([market.transition[i] @ (g2[i] - contract.r2[i]) for i in range(k)])
    values = np.array(
        [
            period2_reoffer_value(market, market.transition[i], exclusion)
            if market.prior[i] > 0
            else 0.0
            for i in range(k)
        ]
    )
    committed = float(period1 + market.discount * market.prior @ committed_2)
    reoffered = float(period1 + market.discount * market.prior @ values)
    return RenegotiationGain(committed, reoffered, values)
