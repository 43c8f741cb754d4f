"""Members of the persistence family of markets (``fed_agent.contracts.transitions``).

A family member is the defaults table of ``MarketParams`` with the transition P(p) of a
given persistence p in [-1, 1] (1 persistent, 0 i.i.d., -1 reversal of willingness) and a
participation rule; docs/contract-model.md ("Where dynamics pay off") sweeps it.
"""

from __future__ import annotations

from typing import Any

from fed_agent.contracts.market import Market, MarketParams
from fed_agent.contracts.transitions import persistence_transition


def family_params(
    persistence: float,
    num_types: int = 3,
    participation: str = "per_period",
    **overrides: Any,
) -> MarketParams:
    """``MarketParams`` of a family member: the defaults table with P = P(persistence).

    ``overrides`` sets any other ``MarketParams`` field (``discount``, ``prior``, ...); the
    transition is built around the ``prior`` override when one is given.
    """
    if "transition" in overrides or "transition_stay" in overrides:
        raise ValueError(
            "transition: a family member's transition is set by its persistence; "
            "do not override transition or transition_stay"
        )
    return MarketParams(
        num_types=num_types, persistence=persistence, participation=participation, **overrides
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
