"""Capacity-aware contract design: the price of a place in the round.

A round has ``federation.es_per_round`` places and offers contracts to more ESs than that
(``incentive.max_offers_per_round``). The contract model values each ES on its own, as if
every working item were used; with more offers than places, the work of an ES that is not
chosen is worth nothing to the cloud, yet every working item a less willing type gets raises
the information rent of each more willing type of that ES. So the cloud prices a place: a
working item is worth ``G(f) - price`` instead of ``G(f)``, and each ES's contract is
designed for that value (with exit items, ``incentive.exclusion``): a type whose virtual
surplus is below the price gets the exit, and the types above it keep their items without
the rent the excluded type would have cost.

**The priced market.** With ``a = exp(-price / omega)``, ``G(f) - price = omega ln(a (1 +
T_max - T(f)))``. The market with workload ``a W``, module ``a S``, ``kappa / a`` and
``T_max' = a (1 + T_max) - 1`` has the same costs ``c(f) = kappa W f^2``, types, prior,
transitions and discount, and values a working item at ``G(f) - price`` (the exit stays 0).
Every constraint (IR, IC, bounds of f: the priced lower bound is only higher) is the same on
both markets, so a contract designed on the priced market is feasible on the real one, and
its utility there is the priced utility plus ``price`` times its expected places
(:func:`expected_places`): the exact solve on the priced market is the exact optimum of
``U - price * E[places]``.

**Choosing the price.** An extra ES is worth its surplus less the surplus of the place it
displaces: the ``(places + 1)``-th largest complete-information surplus among the offered
ESs, their types drawn from the cloud's beliefs. Priced at that whole surplus a place is
overpriced (an ES that is chosen only when others' types are low is still worth its
surplus then, and the offers leave places empty), so the candidates are no price and
:data:`PRICE_FRACTIONS` of the median displaced surplus; each candidate's offers are scored
by :func:`round_value`, a Monte Carlo estimate of what the round's places earn (each ES takes
its type's item, each period's ``places`` largest positive surpluses are chosen, as the
``deadline`` rule chooses), and the best is offered. Only the cloud's information is used:
public facts, beliefs and the offers themselves.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fed_agent.contracts import Market, complete_information, item_weights, value_of_work
from fed_agent.incentives.guard import GuardedOffers

PRICE_FRACTIONS = (0.25, 0.5, 0.75)
"""Fractions of the median displaced surplus tried as place prices (besides no price)."""
DRAWS = 256
"""Monte Carlo draws of the ESs' types per estimate."""


@dataclass(frozen=True)
class CapacityDesign:
    """The offers of the best place price, with the price and each candidate's score."""

    offers: GuardedOffers
    place_price: float
    scores: dict[float, float]
    """Candidate price -> :func:`round_value` of its offers."""


def priced_market(market: Market, place_price: float) -> Market:
    """``market`` with a working item valued at ``G(f) - place_price`` (module docstring).

    Raises
    ------
    ValueError
        A price below 0, or at least ``omega ln(1 + T_max)`` (no f would be worth it).
    """
    ceiling = market.omega * math.log1p(market.t_max_s)
    if not 0 <= place_price < ceiling:
        raise ValueError(f"place price: must be in [0, {ceiling:.4g}), got {place_price!r}")
    if place_price == 0:
        return market
    a = math.exp(-place_price / market.omega)
    return market.replace(
        workload_gcycles=a * market.workload_gcycles,
        module_bytes=a * market.module_bytes,
        kappa=market.kappa / a,
        t_max_s=a * (1.0 + market.t_max_s) - 1.0,
    )


def expected_places(f1: np.ndarray, f2: np.ndarray, market: Market) -> float:
    """Expected places a contract's working items fill, weighed as its utility weighs them:
    ``sum_i rho_i [f_i > 0] + delta sum_ij rho_i P_ij [f_ij > 0]``."""
    working = np.concatenate([np.ravel(f1), np.ravel(f2)]) > 0
    return float(item_weights(market) @ working)


def type_surpluses(markets: Sequence[Market]) -> np.ndarray:
    """(B, K) complete-information surplus G(f) - c(f) / theta of each ES's types at their
    efficient f within the market's bounds, 0 where it would lose money (the exit)."""
    rows = []
    for market in markets:
        contract = complete_information(market, exclusion=True).contract
        rows.append(value_of_work(contract.f1, market) - contract.r1)
    return np.maximum(np.array(rows), 0.0)


def expected_surpluses(markets: Sequence[Market]) -> np.ndarray:
    """(B,) each ES's :func:`type_surpluses` averaged over its market's prior (the cloud's
    belief about its type): what the cloud expects a place given to it to be worth."""
    if not markets:
        return np.zeros(0)
    priors = np.array([m.prior for m in markets])
    return np.sum(type_surpluses(markets) * priors, axis=1)


def price_candidates(
    markets: Sequence[Market], places: int, rng: np.random.Generator
) -> list[float]:
    """0 and the :data:`PRICE_FRACTIONS` of the median ``(places + 1)``-th largest surplus of
    :func:`type_surpluses` over draws of the ESs' types from each market's prior (the
    cloud's belief); only 0 when there are no more ESs than places or nothing is displaced."""
    if len(markets) <= places:
        return [0.0]
    surplus = type_surpluses(markets)
    types = _draw(_per_draw([m.prior for m in markets]), rng)  # (DRAWS, B)
    drawn = np.take_along_axis(surplus, types.T, axis=1).T
    displaced = float(np.median(-np.partition(-drawn, places, axis=1)[:, places]))
    ceiling = min(m.omega * math.log1p(m.t_max_s) for m in markets)
    prices = [fraction * displaced for fraction in PRICE_FRACTIONS]
    return [0.0, *(p for p in prices if 0 < p < ceiling)]


def round_value(
    offers: GuardedOffers, markets: Sequence[Market], places: int, rng: np.random.Generator
) -> float:
    """Monte Carlo estimate of the cloud's utility ``V1 + delta V2`` from an epoch's places.

    Each ES's period-1 type is drawn from its market's prior and its period-2 type from the
    transition; it takes its type's item (the menus are incentive compatible). Per period the
    ``places`` largest positive surpluses of the working items are chosen. Surpluses count
    the pay the work is owed in the model's terms: deferred period-1 pay ``R_i / delta`` is
    the period-1 reward ``R_i`` (``offers.deferred``)."""
    tables = [_surplus_tables(offers, m, b) for b, m in enumerate(markets)]
    k = markets[0].num_types
    s1 = np.array([t[0] if t else np.full(k, -np.inf) for t in tables])  # (B, K)
    s2 = np.array([t[1] if t else np.full((k, k), -np.inf) for t in tables])  # (B, K, K)
    first = _draw(_per_draw([m.prior for m in markets]), rng)  # (DRAWS, B)
    rows = np.arange(len(markets))
    transitions = np.array([m.transition for m in markets])  # (B, K, K)
    second = _draw(transitions[rows, first], rng)
    period1 = _best_places(s1[rows, first], places)
    period2 = _best_places(s2[rows, first, second], places)
    return float(np.mean(period1 + markets[0].discount * period2))


def capacity_offers(
    design: Callable[[Sequence[Market]], GuardedOffers],
    markets: Sequence[Market],
    places: int,
    rng: np.random.Generator,
) -> CapacityDesign:
    """The offers for ``markets`` at the place price whose offers earn most
    (:func:`round_value`); ``design`` maps markets to offers (the contract policy). The
    contracts are designed on the priced markets; the utilities reported are the real ones.
    The offers' ``design_s`` is the time of every candidate's design, ``guard_s`` the rest
    (each candidate's guard, the candidate prices and the scoring)."""
    start = time.perf_counter()
    scores: dict[float, float] = {}
    best: tuple[float, float, GuardedOffers] | None = None
    design_s = 0.0
    for price in price_candidates(markets, places, rng):
        offers = design([priced_market(m, price) for m in markets])
        design_s += offers.design_s
        offers = _real_utilities(offers, markets, price)
        scores[price] = round_value(offers, markets, places, rng)
        if best is None or scores[price] > best[0]:
            best = (scores[price], price, offers)
    assert best is not None  # price_candidates always holds 0
    guard_s = max(time.perf_counter() - start - design_s, 0.0)
    offers = dataclasses.replace(best[2], design_s=design_s, guard_s=guard_s)
    return CapacityDesign(offers, best[1], scores)


def _real_utilities(offers: GuardedOffers, markets: Sequence[Market], price: float):
    """The offers with each contract's utility on the real market (priced + price x places)."""
    if price == 0:
        return offers
    utility = offers.cloud_utility.copy()
    for row, contract in enumerate(offers.contracts):
        if contract is not None:
            utility[row] += price * expected_places(contract.f1, contract.f2, markets[row])
    return dataclasses.replace(offers, cloud_utility=utility)


def _surplus_tables(
    offers: GuardedOffers, market: Market, row: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(K,) period-1 and (K, K) period-2 surplus G(f) - R of an ES's items in the model's
    terms (deferred pay moved back to period 1), -inf for exits; None for no offer."""
    contract = offers.contracts[row]
    if contract is None:
        return None
    owed = np.zeros(market.num_types)
    if offers.deferred is not None and offers.deferred[row] is not None:
        owed = np.asarray(offers.deferred[row], float)
    r1 = contract.r1 + market.discount * owed
    r2 = contract.r2 - owed[:, None]
    s1 = np.where(contract.f1 > 0, value_of_work(contract.f1, market) - r1, -np.inf)
    s2 = np.where(contract.f2 > 0, value_of_work(contract.f2, market) - r2, -np.inf)
    return s1, s2


def _per_draw(priors: Sequence[np.ndarray]) -> np.ndarray:
    """(DRAWS, B, K): each ES's prior, once per draw."""
    return np.broadcast_to(np.array(priors), (DRAWS, len(priors), len(priors[0])))


def _draw(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One type drawn from each row of ``probabilities`` (..., K): shape (...)."""
    cumulative = np.cumsum(probabilities, axis=-1)
    u = rng.random((*probabilities.shape[:-1], 1))
    return np.minimum((u > cumulative).sum(axis=-1), probabilities.shape[-1] - 1)


def _best_places(surplus: np.ndarray, places: int) -> np.ndarray:
    """Per draw (rows), the sum of the ``places`` largest positive surpluses."""
    positive = np.where(surplus > 0, surplus, 0.0)
    if positive.shape[1] > places:
        positive = -np.partition(-positive, places - 1, axis=1)[:, :places]
    return positive.sum(axis=1)
