"""The guard between a contract policy and the ESs: never offer a contract that loses money.

Whatever a policy proposes (a learned designer can be wrong on a market it never saw), the
cloud prices the proposal exactly, compares it with a cheap reference contract and offers the
better one, or nothing when even the better one has a negative expected cloud utility for
that ES (the outside option: the model forces every type to take an item, so a market where
no contract pays is one to stay out of).

The reference is the best pooling contract in closed form
(:func:`fed_agent.contracts.pricing.reference_menus`): one item for every type and period,
always implementable, the exact uniform optimum per period. Where both proposal and
reference lose money, or the better of the two earns less than ``EXACT_BELOW`` of the
market's complete-information value (a closed-form upper bound, so a proposal far below it
may be leaving money on the table) on a market the policy is not trusted on, the guard
solves the market exactly
(:func:`fed_agent.contracts.solvers.optimal_contract`) before it gives up or settles: a
market where some contract pays is never left without an offer.

Under ex ante participation every offer is made in its deferred form
(:func:`fed_agent.contracts.escrow.defer_pay`): nothing is paid in period 1, and the period-2
items after report i carry the period-1 reward divided by delta, so an ES that discounts
period-2 money as the model does values the offer as the model does (pay held and released
unchanged would be worth only delta per unit to it).

Under ``market.commitment=renegotiation_proof`` no proposal is used: the policy
(``fed_agent.incentives.policies.ContractPolicy``) offers every market its exact
renegotiation-proof contract (:func:`renegotiation_proof_offers`,
:func:`fed_agent.contracts.solvers.renegotiation_proof_contract`), whose period-2 menus the
cloud would not replace after the reports, like the exact solves above (no offer where it
loses money).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fed_agent.contracts import (
    DynamicContract,
    Market,
    MarketBatch,
    cloud_utility_batch,
    complete_information_utility,
    count_violations,
    optimal_contract,
    renegotiation_proof_contract,
)
from fed_agent.contracts.escrow import deferred_menus
from fed_agent.contracts.payments import within_bounds
from fed_agent.contracts.pricing import price_menus, reference_menus
from fed_agent.contracts.solvers.renegotiation_proof import NoRenegotiationProofContract

log = logging.getLogger(__name__)
DESIGNED, FALLBACK, EXACT, NO_OFFER = "designer", "fallback", "exact", "no_offer"
EXACT_BELOW = 0.5
"""On a market where the policy is not trusted, the guard solves exactly when the proposal
loses to the pooling reference or the better of the two earns less than this share of the
market's complete-information value (every market is solved when both lose money).
docs/contract-model.md, "The guard", has the measurements behind it."""


@dataclass(frozen=True)
class GuardedOffers:
    """What the cloud offers each of B ESs, and why.

    Attributes
    ----------
    contracts : list
        The contract offered to each ES, or None (no offer).
    sources : list of str
        ``designer`` (the policy's proposal), ``fallback`` (the reference was better),
        ``exact`` (the guard's exact solve was better than both) or ``no_offer``.
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
    exact_solves: int = 0
    """Markets the guard solved exactly."""
    deferred: list[np.ndarray | None] | None = None
    """Per ES, the (K,) period-1 pay deferred into period 2 by report (R_i / delta; zeros
    when nothing is deferred; None for no offer): part of every period-2 reward after report
    i, owed for the period-1 work whatever the ES is asked to do in period 2. None: nothing
    deferred for any ES."""


def guard_offers(
    markets: Sequence[Market],
    proposals: Sequence[DynamicContract],
    priced: bool,
    exact_below: float = EXACT_BELOW,
    defer: bool = True,
    trusted: np.ndarray | None = None,
    exclusion: bool = False,
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
    exact_below : float
        On an untrusted market, solve exactly when the proposal loses to the reference or
        the better of the two earns less than this share of the market's
        complete-information value. Every market is solved exactly when both lose money.
    trusted : np.ndarray, optional
        (B,) markets where the policy is trusted (a learned designer within its training
        ranges, ``ContractDesigner.covers``); default: every market. On trusted markets
        only a loss triggers the exact solve, which keeps the guard cheap in distribution.
    defer : bool
        Offer ex ante contracts with all period-1 pay deferred (see the module docstring).
    exclusion : bool
        Contracts may give a type the exit item (f = 0, R = 0): a proposal's exits pass the
        verification and the exact solve may exclude types. Only for a runtime that handles
        exit items (an ES that takes one does no work and is paid nothing).
    """
    if len(markets) != len(proposals):
        raise ValueError(f"{len(proposals)} proposals for {len(markets)} markets")
    batch = MarketBatch.from_markets(markets)
    f1 = np.stack([np.asarray(c.f1, float) for c in proposals])
    f2 = np.stack([np.asarray(c.f2, float) for c in proposals])
    if priced:
        r1 = np.stack([np.asarray(c.r1, float) for c in proposals])
        r2 = np.stack([np.asarray(c.r2, float) for c in proposals])
        valid = _within_bounds(f1, r1, f2, r2, batch, exclusion)
        valid &= count_violations(f1, r1, f2, r2, batch) == 0
        valid &= (r1.min(axis=1) >= 0) & (r2.min(axis=(1, 2)) >= 0)
        proposed = np.where(valid, cloud_utility_batch(f1, r1, f2, r2, batch), -np.inf)
    else:
        repriced = price_menus(f1, f2, markets, batch)
        r1, r2, proposed = repriced.r1, repriced.r2, repriced.utility
    proposed = np.where(np.isfinite(proposed), proposed, -np.inf)
    ref = reference_menus(batch)
    reference = cloud_utility_batch(*ref, batch)
    best = np.maximum(proposed, reference)
    upper = complete_information_utility(batch)
    trusted = np.ones(batch.size, bool) if trusted is None else np.asarray(trusted, bool)
    doubtful = (proposed < reference) | (best < exact_below * upper)
    solve = (best < 0) | (~trusted & doubtful)
    exact: dict[int, tuple[DynamicContract, float]] = {}
    for row in np.flatnonzero(solve):
        solution = optimal_contract(markets[row], exclusion=exclusion)
        if solution.cloud_utility > max(best[row], 0.0):
            exact[row] = (solution.contract, solution.cloud_utility)
    menus = [np.array(a, dtype=float, copy=True) for a in (f1, r1, f2, r2)]
    sources: list[str] = []
    utility = np.zeros(batch.size)
    for row in range(batch.size):
        if row in exact:
            contract, utility[row] = exact[row]
            terms = (contract.f1, contract.r1, contract.f2, contract.r2)
            for menu, value in zip(menus, terms, strict=True):
                menu[row] = value
            sources.append(EXACT)
        elif best[row] < 0:
            sources.append(NO_OFFER)
        elif proposed[row] >= reference[row]:
            # the verified (or re-priced) proposal
            sources.append(DESIGNED)
            utility[row] = proposed[row]
        else:
            for menu, value in zip(menus, ref, strict=True):
                menu[row] = value[row]
            sources.append(FALLBACK)
            utility[row] = reference[row]
    offered = np.array([source != NO_OFFER for source in sources])
    return _offer(menus, offered, sources, utility, batch, defer, exact_solves=int(solve.sum()))


def _offer(
    menus: list[np.ndarray],
    offered: np.ndarray,
    sources: list[str],
    utility: np.ndarray,
    batch: MarketBatch,
    defer: bool,
    exact_solves: int,
) -> GuardedOffers:
    """The offers of stacked ``menus`` (f1, r1, f2, r2) where ``offered``, deferred under ex
    ante when ``defer`` (see the module docstring)."""
    owed = np.zeros_like(menus[1])
    if defer:  # what deferral adds to each period-2 row: the deferred pay of each report
        _, shift = deferred_menus(menus[1], np.zeros_like(menus[3]), batch.discount, batch.ex_ante)
        owed = shift[:, :, 0]
        menus[1], menus[3] = deferred_menus(menus[1], menus[3], batch.discount, batch.ex_ante)
    stacked = iter(DynamicContract.stacked(*(m[offered] for m in menus)) if offered.any() else [])
    contracts = [next(stacked) if offer else None for offer in offered]
    deferred = [owed[row] if offer else None for row, offer in enumerate(offered)]
    return GuardedOffers(contracts, sources, utility, exact_solves=exact_solves, deferred=deferred)


def renegotiation_proof_offers(
    markets: Sequence[Market], exclusion: bool = False, defer: bool = True
) -> GuardedOffers:
    """Under ``market.commitment=renegotiation_proof``: the exact renegotiation-proof contract
    of every market (source ``exact``; no offer where it loses money), deferred like every
    offer. No proposal is used: a designer's contract is not renegotiation-proof."""
    batch = MarketBatch.from_markets(markets)
    k = batch.num_types
    menus = [np.zeros((batch.size, k)), np.zeros((batch.size, k))]
    menus += [np.zeros((batch.size, k, k)), np.zeros((batch.size, k, k))]
    utility = np.zeros(batch.size)
    for row, market in enumerate(markets):
        try:
            solution = renegotiation_proof_contract(market, exclusion=exclusion)
        except NoRenegotiationProofContract as err:
            log.warning("no offer on market %d of the batch: %s", row, err)
            continue
        utility[row] = max(solution.cloud_utility, 0.0)
        contract = solution.contract
        terms = (contract.f1, contract.r1, contract.f2, contract.r2)
        for menu, value in zip(menus, terms, strict=True):
            menu[row] = value
    offered = utility > 0
    sources = [EXACT if offer else NO_OFFER for offer in offered]
    return _offer(menus, offered, sources, utility, batch, defer, exact_solves=batch.size)


def _within_bounds(
    f1: np.ndarray,
    r1: np.ndarray,
    f2: np.ndarray,
    r2: np.ndarray,
    batch: MarketBatch,
    exclusion: bool,
) -> np.ndarray:
    """Every f in [f_lo, f_hi]; with ``exclusion`` an item may also be the exit (0, 0)."""
    flat = np.concatenate([f1, f2.reshape(f2.shape[0], -1)], axis=1)
    if exclusion:
        rewards = np.concatenate([r1, r2.reshape(r2.shape[0], -1)], axis=1)
        exit_item = (flat == 0) & (rewards == 0)
        flat = np.where(exit_item, batch.f_lo[:, None], flat)
    return within_bounds(flat, batch.f_lo, batch.f_hi)


def unguarded_offers(
    markets: Sequence[Market], proposals: Sequence[DynamicContract]
) -> GuardedOffers:
    """The proposals as they are (policies that are not contract designs), scored."""
    batch = MarketBatch.from_markets(markets)
    stacked = [np.stack([getattr(c, name) for c in proposals]) for name in ("f1", "r1", "f2", "r2")]
    utility = cloud_utility_batch(*stacked, batch)
    return GuardedOffers(list(proposals), [DESIGNED] * len(proposals), utility)
