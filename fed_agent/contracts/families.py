"""Named market families: how persistent an ES's willingness is from period 1 to period 2.

One parameter, the persistence p in [-1, 1], spans the transition matrices from perfectly
persistent types through i.i.d. types to a reversal of willingness (docs/contract-model.md,
"Where dynamics pay off"). With the prior rho as the i.i.d. part (every row of ``1 rho^T`` is
the prior) and J the anti-diagonal reversal (type i goes to type K-1-i):

    P(p) = p I + (1 - p) 1 rho^T        for 0 <= p <= 1
    P(p) = |p| J + (1 - |p|) 1 rho^T    for -1 <= p < 0

so p = 1 is the identity (types never change), p = 0 draws the period-2 type afresh from the
prior (i.i.d.), and p = -1 is the pure reversal: an ES with spare capacity in period 1 (a high
type) is loaded in period 2 (a low type) and vice versa. For odd K the middle type is its own
mirror image, so it stays put with probability |p| + (1 - |p|) rho_mid.

The family's named members (``uncorrelated``, ``reversal`` and their K = 5 ``*_paper``
siblings) are added to ``fed_agent.contracts.market.NAMED_MARKETS`` here, when the package
is imported (market.py cannot import this module: no import cycles).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fed_agent.choices import check_choice
from fed_agent.contracts.market import NAMED_MARKETS, PARTICIPATION_RULES, Market, MarketParams

PERSISTENCE_RANGE = (-1.0, 1.0)
# The family member recommended as the market where dynamics pay off (benchmarks/contracts_bench.py
# sweep): a mild reversal of willingness with ex-ante participation. See docs/contract-model.md.
REVERSAL_PERSISTENCE = -0.4
REVERSAL_PARTICIPATION = "ex_ante"
_PROB_TOL = 1e-8


def _check_num_types(num_types: int) -> int:
    if int(num_types) != num_types or num_types < 2:
        raise ValueError(f"num_types: a market family needs an integer K >= 2, got {num_types!r}")
    return int(num_types)


def _check_persistence(persistence: float) -> float:
    low, high = PERSISTENCE_RANGE
    value = float(persistence)
    if not (np.isfinite(value) and low <= value <= high):
        raise ValueError(
            f"persistence: must lie in [{low:g}, {high:g}] (1 persistent, 0 i.i.d., "
            f"-1 reversal), got {persistence!r}"
        )
    return value


def _check_prior(prior: object | None, num_types: int) -> np.ndarray:
    if prior is None:
        return np.full(num_types, 1.0 / num_types)
    array = np.asarray(list(prior), dtype=float)  # list(...) also takes OmegaConf lists
    if array.shape != (num_types,):
        raise ValueError(f"prior: expected shape ({num_types},), got {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0) or abs(array.sum() - 1) > _PROB_TOL:
        raise ValueError(
            f"prior: must be a probability vector (entries >= 0, sum 1), got {array.tolist()}"
        )
    return array


def reversal_matrix(num_types: int) -> np.ndarray:
    """J, the anti-diagonal permutation: period-1 type i becomes period-2 type K-1-i."""
    return np.eye(_check_num_types(num_types))[::-1].copy()


def persistence_transition(
    num_types: int, persistence: float, prior: object | None = None
) -> np.ndarray:
    """The transition matrix P(p) of the persistence family (see the module docstring).

    Parameters
    ----------
    num_types : int
        K >= 2.
    persistence : float
        p in [-1, 1]: 1 = identity (persistent), 0 = every row is the prior (i.i.d.),
        -1 = the reversal J (anti-persistent).
    prior : sequence of float, optional
        The i.i.d. part of each row (the market's prior rho); uniform when omitted.

    Returns
    -------
    np.ndarray
        A row-stochastic K x K matrix, P[i, j] = Pr(period-2 type j | period-1 type i).
    """
    k = _check_num_types(num_types)
    p = _check_persistence(persistence)
    rho = _check_prior(prior, k)
    structure = np.eye(k) if p >= 0 else reversal_matrix(k)
    return abs(p) * structure + (1.0 - abs(p)) * np.tile(rho, (k, 1))


def iid_transition(num_types: int, prior: object | None = None) -> np.ndarray:
    """I.i.d. types: every row of P is the prior (persistence 0)."""
    return persistence_transition(num_types, 0.0, prior)


def family_params(
    persistence: float,
    num_types: int = 3,
    participation: str = "per_period",
    **overrides: Any,
) -> MarketParams:
    """``MarketParams`` of a family member: the defaults table with P = P(persistence).

    ``overrides`` sets any other ``MarketParams`` field (``discount``, ``prior``, ...); the
    transition is built from the ``prior`` override when one is given.
    """
    check_choice("participation", participation, PARTICIPATION_RULES)
    if "transition" in overrides or "transition_stay" in overrides:
        raise ValueError(
            "transition: a family member's transition is set by its persistence; "
            "do not override transition or transition_stay"
        )
    transition = persistence_transition(num_types, persistence, overrides.get("prior"))
    return MarketParams(
        num_types=_check_num_types(num_types),
        transition=transition.tolist(),
        participation=participation,
        **overrides,
    )


def family_market(
    persistence: float,
    num_types: int = 3,
    participation: str = "per_period",
    **overrides: Any,
) -> Market:
    """The validated ``Market`` of a family member (see :func:`family_params`)."""
    return Market.from_params(family_params(persistence, num_types, participation, **overrides))


def with_persistence(market: Market, persistence: float) -> Market:
    """A copy of ``market`` whose transition is P(persistence) around its own prior (e.g. a
    randomised federation market moved onto a family member)."""
    return market.replace(
        transition=persistence_transition(market.num_types, persistence, market.prior)
    )


FAMILY_MARKETS = {
    # i.i.d. types (persistence 0): every row of P is the prior
    "uncorrelated": family_params(0.0, 3, "per_period"),
    "uncorrelated_paper": family_params(0.0, 5, "per_period"),
    # a mild reversal of willingness with ex-ante participation: where the dynamic contract
    # pays off (docs/contract-model.md, "Where dynamics pay off")
    "reversal": family_params(REVERSAL_PERSISTENCE, 3, REVERSAL_PARTICIPATION),
    "reversal_paper": family_params(REVERSAL_PERSISTENCE, 5, REVERSAL_PARTICIPATION),
}
NAMED_MARKETS.update(FAMILY_MARKETS)
