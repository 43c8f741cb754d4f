"""The guard between a contract policy and the ESs: never offer a contract that loses money.

Whatever a policy proposes (a learned designer can be wrong on a market it never saw), the
cloud prices the proposal exactly, compares it with a cheap reference contract and offers the
better one, or nothing when even the better one has a negative expected cloud utility for
that ES (the outside option: the model forces every type to take an item, so a market where
no contract pays is one to stay out of).

The reference is the best pooling contract in closed form
(:func:`fed_agent.contracts.pricing.reference_menus`): one item for every type and period,
always implementable, the exact uniform optimum per period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fed_agent.contracts import (
    DynamicContract,
    Market,
    MarketBatch,
    cloud_utility_batch,
    count_violations,
)
from fed_agent.contracts.payments import within_bounds
from fed_agent.contracts.pricing import price_menus, reference_menus

DESIGNED, FALLBACK, NO_OFFER = "designer", "fallback", "no_offer"


@dataclass(frozen=True)
class GuardedOffers:
    """What the cloud offers each of B ESs, and why.

    Attributes
    ----------
    contracts : list
        The contract offered to each ES, or None (no offer).
    sources : list of str
        ``designer`` (the policy's proposal), ``fallback`` (the reference was better) or
        ``no_offer``.
    cloud_utility : np.ndarray
        (B,) expected cloud utility per ES of what is offered (0 for no offer).
    """

    contracts: list[DynamicContract | None]
    sources: list[str]
    cloud_utility: np.ndarray
    design_s: float = 0.0
    """Wall time of the policy's design call."""
    guard_s: float = 0.0
    """Wall time of the guard (pricing, reference, choice)."""


def guard_offers(
    markets: Sequence[Market], proposals: Sequence[DynamicContract], priced: bool
) -> GuardedOffers:
    """Price each proposal, compare it with the reference, and decide what to offer.

    Parameters
    ----------
    markets : Sequence[Market]
        Each ES's market.
    proposals : Sequence[DynamicContract]
        The policy's contract for each market.
    priced : bool
        The policy's rewards are already the least-cost rewards of its f (the learned
        designers and the exact solvers price so): the guard then only verifies that the
        contract satisfies every constraint and scores it. Otherwise the guard reprices the
        proposal's f exactly (:func:`price_menus`: closed form where certified, else the
        minimal payment LP), which also repairs rewards that are too high or break a
        constraint.
    """
    if len(markets) != len(proposals):
        raise ValueError(f"{len(proposals)} proposals for {len(markets)} markets")
    batch = MarketBatch.from_markets(markets)
    f1 = np.stack([np.asarray(c.f1, float) for c in proposals])
    f2 = np.stack([np.asarray(c.f2, float) for c in proposals])
    if priced:
        r1 = np.stack([np.asarray(c.r1, float) for c in proposals])
        r2 = np.stack([np.asarray(c.r2, float) for c in proposals])
        valid = _within_bounds(f1, f2, batch) & (count_violations(f1, r1, f2, r2, batch) == 0)
        valid &= (r1.min(axis=1) >= 0) & (r2.min(axis=(1, 2)) >= 0)
        proposed = np.where(valid, cloud_utility_batch(f1, r1, f2, r2, batch), -np.inf)
    else:
        menus = price_menus(f1, f2, markets, batch)
        r1, r2, proposed = menus.r1, menus.r2, menus.utility
    proposed = np.where(np.isfinite(proposed), proposed, -np.inf)
    ref = reference_menus(batch)
    reference = cloud_utility_batch(*ref, batch)
    contracts: list[DynamicContract | None] = []
    sources: list[str] = []
    for row in range(batch.size):
        if max(proposed[row], reference[row]) < 0:
            contracts.append(None)
            sources.append(NO_OFFER)
        elif proposed[row] >= reference[row]:
            # a verified proposal is offered as it is; a re-priced one with its new rewards
            if priced:
                contracts.append(proposals[row])
            else:
                contracts.append(DynamicContract(f1[row], r1[row], f2[row], r2[row]))
            sources.append(DESIGNED)
        else:
            contracts.append(DynamicContract(ref[0][row], ref[1][row], ref[2][row], ref[3][row]))
            sources.append(FALLBACK)
    utility = np.where([s == NO_OFFER for s in sources], 0.0, np.maximum(proposed, reference))
    return GuardedOffers(contracts, sources, utility)


def _within_bounds(f1: np.ndarray, f2: np.ndarray, batch: MarketBatch) -> np.ndarray:
    flat = np.concatenate([f1, f2.reshape(f2.shape[0], -1)], axis=1)
    return within_bounds(flat, batch.f_lo, batch.f_hi)


def unguarded_offers(
    markets: Sequence[Market], proposals: Sequence[DynamicContract]
) -> GuardedOffers:
    """The proposals as they are (policies that are not contract designs), scored."""
    batch = MarketBatch.from_markets(markets)
    stacked = [np.stack([getattr(c, name) for c in proposals]) for name in ("f1", "r1", "f2", "r2")]
    utility = cloud_utility_batch(*stacked, batch)
    return GuardedOffers(list(proposals), [DESIGNED] * len(proposals), utility)
