"""Reference contracts: complete information, the exact optimum, static, uniform, random."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fed_agent.contracts.audit import Violation, audit
from fed_agent.contracts.constraints import item_types
from fed_agent.contracts.contract import DynamicContract
from fed_agent.contracts.market import Market, check_choice
from fed_agent.contracts.payments import minimal_payments
from fed_agent.contracts.solvers.convex import solve_tied
from fed_agent.contracts.utility import cloud_utility, energy_cost


@dataclass(frozen=True, eq=False)
class Solution:
    """A reference contract with its cloud utility, solve time and (if any) certified gap."""

    name: str
    contract: DynamicContract
    cloud_utility: float
    solve_time_s: float
    optimality_gap: float | None = None


def efficient_resource(theta: np.ndarray, market: Market) -> np.ndarray:
    """The f that maximises G(f) - c(f) / theta (complete information), element-wise.

    With A = 1 + T_max - S/r the first-order condition G'(f) = c'(f)/theta reads
    2 kappa A f^3 - 2 kappa W f^2 - omega theta = 0, whose unique root above W/A is taken
    (the objective is concave there) and clipped to the bounds of f.
    """
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    headroom = 1.0 + market.t_max_s - market.upload_s
    roots = np.empty_like(theta)
    for index, value in enumerate(theta):
        coefficients = [
            2 * market.kappa * headroom,
            -2 * market.kappa * market.workload_gcycles,
            0.0,
            -market.omega * value,
        ]
        candidates = np.roots(coefficients)
        real = candidates[np.abs(candidates.imag) < 1e-9].real
        roots[index] = real[real > market.workload_gcycles / headroom].max()
    return np.clip(roots, market.f_lower_ghz, market.f_max_ghz)


def _timed(name: str, build: Callable[[], tuple[DynamicContract, float | None]], market: Market):
    start = time.perf_counter()
    contract, gap = build()
    elapsed = time.perf_counter() - start
    return Solution(name, contract, cloud_utility(contract, market), elapsed, gap)


def complete_information(market: Market) -> Solution:
    """The cloud sees every type: f is efficient per type and R = c(f)/theta (IR binds).

    This contract is not incentive compatible (a type would gladly take a lower type's
    item), so it is audited for IR and bounds only; it bounds every other contract's utility.
    """

    def build() -> tuple[DynamicContract, float | None]:
        theta = item_types(market)
        f = efficient_resource(theta, market)
        return DynamicContract.from_flat(f, energy_cost(f, market) / theta, market.num_types), 0.0

    return _timed("complete_information", build, market)


def _solve_with_maps(
    name: str, market: Market, cost_map: np.ndarray, reward_map: np.ndarray
) -> Solution:
    def build() -> tuple[DynamicContract, float | None]:
        result = solve_tied(market, cost_map, reward_map)
        f = np.clip(result.f, market.f_lower_ghz, market.f_max_ghz)
        gap = (result.upper_bound - result.lower_bound) / (1.0 + abs(result.lower_bound))
        return DynamicContract.from_flat(f, result.rewards, market.num_types), max(gap, 0.0)

    return _timed(name, build, market)


def optimal_contract(market: Market) -> Solution:
    """The exact optimum under asymmetric information (certified by the cutting-plane gap)."""
    identity = np.arange(market.num_types * (market.num_types + 1))
    return _solve_with_maps("optimal", market, identity, identity)


def _static_map(num_types: int) -> np.ndarray:
    return np.concatenate([np.arange(num_types), np.tile(np.arange(num_types), num_types)])


def static_contract(market: Market) -> Solution:
    """The best single menu reused in both periods (item j for type j, whatever the history).

    The period-2 menu does not depend on the period-1 report, so the continuation is the same
    for every report and the problem is one-period screening weighted by rho + delta rho P.
    """
    tied = _static_map(market.num_types)
    return _solve_with_maps("static", market, tied, tied)


def uniform_contract(market: Market) -> Solution:
    """The best single item (f, R) offered to every type in both periods."""
    tied = np.zeros(market.num_types * (market.num_types + 1), dtype=int)
    return _solve_with_maps("uniform", market, tied, tied)


def random_feasible_contract(
    market: Market, rng: np.random.Generator, max_draws: int = 50
) -> Solution:
    """A random implementable menu: sorted random f per menu, priced by minimal payments.

    Sorting makes f rise with the type, which IC needs; if no draw is implementable (possible
    when P is far from monotone) the one-item menu with a random f is used, which always is.
    """

    def build() -> tuple[DynamicContract, float | None]:
        k = market.num_types
        low, high = market.f_lower_ghz, market.f_max_ghz
        for _ in range(max_draws):
            f1 = np.sort(rng.uniform(low, high, k))
            f2 = np.sort(rng.uniform(low, high, (k, k)), axis=1)
            contract = minimal_payments(f1, f2, market)
            if contract is not None:
                return contract, None
        f = rng.uniform(low, high)
        contract = minimal_payments(np.full(k, f), np.full((k, k), f), market)
        if contract is None:  # one item for everyone is always implementable
            raise RuntimeError("minimal payments failed on a one-item menu")
        return contract, None

    return _timed("random", build, market)


REFERENCE_SOLVERS: dict[str, Callable[..., Solution]] = {
    "complete_information": complete_information,
    "optimal": optimal_contract,
    "static": static_contract,
    "uniform": uniform_contract,
    "random": random_feasible_contract,
}


def solve_reference(name: str, market: Market, rng: np.random.Generator | None = None) -> Solution:
    """Solve the reference contract called ``name`` (see ``REFERENCE_SOLVERS``)."""
    check_choice("solution", name, REFERENCE_SOLVERS)
    if name == "random":
        return random_feasible_contract(market, rng or np.random.default_rng(0))
    return REFERENCE_SOLVERS[name](market)


def reference_violations(name: str, contract: DynamicContract, market: Market) -> list[Violation]:
    """Audit a reference contract by the constraints it is meant to meet.

    The complete-information contract knows each type, so it is checked for IR and bounds only;
    every other reference must also be incentive compatible.
    """
    if name == "complete_information":
        return audit(contract, market, kinds=("IR", "bounds"))
    return audit(contract, market)
