"""Reference contracts: complete information, the exact optimum, the best static pair of menus,
the renegotiation-proof optimum, the one-menu static contract, uniform, random."""

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
from fed_agent.contracts.solvers.renegotiation_proof import renegotiation_proof_solution
from fed_agent.contracts.utility import cloud_utility, energy_cost, value_of_work


@dataclass(frozen=True, eq=False)
class Solution:
    """A reference contract with its cloud utility, solve time and (if any) certified gap."""

    name: str
    contract: DynamicContract
    cloud_utility: float
    solve_time_s: float
    optimality_gap: float | None = None

    @property
    def excluded_types(self) -> str:
        """The exit items of the contract (:func:`excluded_items`)."""
        return excluded_items(self.contract)


def excluded_items(contract: DynamicContract) -> str:
    """Which types a contract excludes (an exit item f = 0): ``1:i`` for period-1 type i,
    ``2:h,j`` for period-2 type j after report h, space separated; "" when none."""
    first = [f"1:{i}" for i in np.flatnonzero(contract.f1 == 0)]
    second = [f"2:{h},{j}" for h, j in zip(*np.nonzero(contract.f2 == 0), strict=True)]
    return " ".join(first + second)


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


def complete_information(market: Market, exclusion: bool = False) -> Solution:
    """The cloud sees every type: f is efficient per type and R = c(f)/theta (IR binds).

    This contract is not incentive compatible (a type would gladly take a lower type's
    item), so it is audited for IR and bounds only; it bounds every other contract's utility.
    With ``exclusion`` a type whose efficient surplus G(f) - c(f)/theta is negative gets the
    exit (f = 0, R = 0).
    """

    def build() -> tuple[DynamicContract, float | None]:
        theta = item_types(market)
        f = efficient_resource(theta, market)
        reward = energy_cost(f, market) / theta
        if exclusion:
            losing = value_of_work(f, market) - reward < 0
            f, reward = np.where(losing, 0.0, f), np.where(losing, 0.0, reward)
        return DynamicContract.from_flat(f, reward, market.num_types), 0.0

    return _timed("complete_information", build, market)


def _solve_with_maps(
    name: str, market: Market, cost_map: np.ndarray, reward_map: np.ndarray, exclusion: bool
) -> Solution:
    def build() -> tuple[DynamicContract, float | None]:
        result = solve_tied(market, cost_map, reward_map, exclusion=exclusion)
        f = np.where(result.f == 0, 0.0, np.clip(result.f, market.f_lower_ghz, market.f_max_ghz))
        gap = (result.upper_bound - result.lower_bound) / (1.0 + abs(result.lower_bound))
        return DynamicContract.from_flat(f, result.rewards, market.num_types), max(gap, 0.0)

    return _timed(name, build, market)


def optimal_contract(market: Market, exclusion: bool = False) -> Solution:
    """The exact optimum under asymmetric information (certified by the cutting-plane gap).

    With ``exclusion`` any item may also be the exit (no work, no pay), as in standard
    screening; ``solve_tied`` finds which by branch and bound. Off by default: the federated
    runtime does not yet handle exit items (docs/contract-model.md, "Exclusion").
    """
    identity = np.arange(market.num_types * (market.num_types + 1))
    return _solve_with_maps("optimal", market, identity, identity, exclusion)


def _static_map(num_types: int) -> np.ndarray:
    return np.concatenate([np.arange(num_types), np.tile(np.arange(num_types), num_types)])


def static_contract(market: Market, exclusion: bool = False) -> Solution:
    """The best single menu reused in both periods (item j for type j, whatever the history).

    The period-2 menu does not depend on the period-1 report, so the continuation is the same
    for every report and the problem is one-period screening weighted by rho + delta rho P.
    """
    tied = _static_map(market.num_types)
    return _solve_with_maps("static", market, tied, tied, exclusion)


def _static_pair_map(num_types: int) -> np.ndarray:
    k = num_types
    return np.concatenate([np.arange(k), k + np.tile(np.arange(k), k)])


def best_static_contract(market: Market, exclusion: bool = False) -> Solution:
    """The best report-independent pair of menus: one menu for period 1 and one for period 2,
    the period-2 menu the same after every period-1 report.

    This is the best contract that does not condition on the report (the period-2 item
    depends only on the period-2 type), so the optimum's gain over it is exactly the value
    of history dependence; the one-menu :func:`static_contract` also forces both periods'
    menus to be equal. Exact, by the same cutting-plane solver with tied variables.
    """
    tied = _static_pair_map(market.num_types)
    return _solve_with_maps("best_static", market, tied, tied, exclusion)


def renegotiation_proof_contract(market: Market, exclusion: bool = False) -> Solution:
    """The best contract the cloud never wants to renegotiate: after every report i the
    period-2 menu is a one-period optimum for the belief P[i, .] (so re-offering period 2
    gains nothing), the period-1 menu optimal given them (``solvers.renegotiation_proof``).
    Worth at most the full-commitment optimum (a restriction of it)."""
    return _timed(
        "renegotiation_proof", lambda: renegotiation_proof_solution(market, exclusion), market
    )


def uniform_contract(market: Market, exclusion: bool = False) -> Solution:
    """The best single item (f, R) offered to every type in both periods (with
    ``exclusion``: or the exit for everyone, which is worth 0)."""
    tied = np.zeros(market.num_types * (market.num_types + 1), dtype=int)
    return _solve_with_maps("uniform", market, tied, tied, exclusion)


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
    "best_static": best_static_contract,
    "renegotiation_proof": renegotiation_proof_contract,
    "static": static_contract,
    "uniform": uniform_contract,
    "random": random_feasible_contract,
}


def solve_reference(
    name: str,
    market: Market,
    rng: np.random.Generator | None = None,
    exclusion: bool = False,
) -> Solution:
    """Solve the reference contract called ``name`` (see ``REFERENCE_SOLVERS``); with
    ``exclusion`` every reference but ``random`` may give a type the exit item."""
    check_choice("solution", name, REFERENCE_SOLVERS)
    if name == "random":
        return random_feasible_contract(market, rng or np.random.default_rng(0))
    return REFERENCE_SOLVERS[name](market, exclusion=exclusion)


def reference_violations(name: str, contract: DynamicContract, market: Market) -> list[Violation]:
    """Audit a reference contract by the constraints it is meant to meet.

    The complete-information contract knows each type, so it is checked for IR and bounds only;
    every other reference must also be incentive compatible.
    """
    if name == "complete_information":
        return audit(contract, market, kinds=("IR", "bounds"))
    return audit(contract, market)
