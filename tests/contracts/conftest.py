"""Shared markets and hypothesis strategies for the contract tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from fed_agent.contracts import Market, MarketRanges, es_choice, period2_choice, sample_market
from fed_agent.contracts.utility import es_period_utility


@st.composite
def random_markets(draw: st.DrawFn, max_types: int = 4) -> Market:
    """A random market: 2..max_types types, either rule, monotone or arbitrary transitions."""
    num_types = draw(st.integers(2, max_types))
    seed = draw(st.integers(0, 2**31 - 1))
    ranges = MarketRanges(
        transition=draw(st.sampled_from(["neighbour", "dirichlet"])),
        participation=draw(st.sampled_from(["per_period", "ex_ante"])),
    )
    return sample_market(np.random.default_rng(seed), ranges, num_types)


def assert_every_type_signs_and_stays(offered, market: Market) -> None:
    """Each type names its own period-1 item, and in period 2 (nothing held) picks an item worth
    as much to it as its own (a tied one may win), never less than 0."""
    k = market.num_types
    assert [es_choice(offered, market, i) for i in range(k)] == list(range(k))
    for i in range(k):
        for j in range(k):
            pick = period2_choice(offered, market, i, j, forfeit=0.0)
            assert pick is not None
            theta = market.types[j]
            own = es_period_utility(offered.r2[i, j], offered.f2[i, j], theta, market)
            chosen = es_period_utility(offered.r2[i, pick], offered.f2[i, pick], theta, market)
            assert chosen == pytest.approx(own, abs=1e-6) and own >= -1e-9
