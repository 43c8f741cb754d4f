"""Shared markets and hypothesis strategies for the contract tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from fed_agent.contracts import Market, MarketRanges, sample_market


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
