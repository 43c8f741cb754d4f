"""Constraint audit: every violated IR, period-2 IC, intertemporal IC and bound, with its size."""

from __future__ import annotations

from dataclasses import dataclass

from fed_agent.contracts.constraints import build_constraints, market_value_scale
from fed_agent.contracts.contract import DynamicContract
from fed_agent.contracts.market import Market
from fed_agent.contracts.utility import energy_cost

VIOLATION_KINDS = ("IR", "IC2", "IC_intertemporal", "bounds")
DEFAULT_TOLERANCE = 1e-9
"""A constraint is violated when it fails by more than this fraction of the market's money
scale (``fed_agent.contracts.constraints.value_scale``, about 146 on the default market): the
exact solvers meet every constraint to about 3e-12 of it."""


@dataclass(frozen=True)
class Violation:
    """One violated constraint.

    ``indices`` are type indices: IR (i,) or (i, j); IC2 (history i, true j, mimicked j');
    IC_intertemporal (true i, reported i'); bounds (flat item index,). ``size`` is by how much
    utility (or GHz / reward units for bounds) the constraint fails. An item with f = 0 is
    the exit (no work, no pay): its bound is R = 0.
    """

    kind: str
    indices: tuple[int, ...]
    size: float

    def __post_init__(self) -> None:
        if self.kind not in VIOLATION_KINDS:
            raise ValueError(f"kind: unknown value {self.kind!r}; valid choices: {VIOLATION_KINDS}")


def audit(
    contract: DynamicContract,
    market: Market,
    tol: float = DEFAULT_TOLERANCE,
    kinds: tuple[str, ...] = VIOLATION_KINDS,
) -> list[Violation]:
    """List every constraint of ``market``'s design problem that ``contract`` violates.

    Parameters
    ----------
    contract, market
        The contract to check and the market it is meant for.
    tol : float
        Tolerance in money: a constraint counts as violated when it fails by more than
        ``tol`` times the market's money scale (:func:`market_value_scale`, which does not
        depend on the contract), so solver round-off is not reported and large rewards
        cannot widen it.
    kinds : tuple of str
        Which kinds to check (the complete-information contract is checked for IR and bounds
        only: the cloud sees the type, so incentive compatibility is not asked of it).
    """
    if contract.num_types != market.num_types:
        raise ValueError(
            f"contract: has {contract.num_types} types but the market has {market.num_types}"
        )
    f, r = contract.flat_f(), contract.flat_r()
    threshold = tol * market_value_scale(market)
    system = build_constraints(market)
    excess = system.a_cost @ energy_cost(f, market) + system.a_reward @ r
    found = [
        Violation(kind, index, float(size))
        for (kind, index), size in zip(system.labels, excess, strict=True)
        if size > threshold and kind in kinds
    ]
    if "bounds" in kinds:
        f_tol = tol * market.f_max_ghz
        for item, value in enumerate(f):
            if value == 0:  # the exit: no work, and then no pay
                size = r[item]
            else:
                size = max(market.f_lower_ghz - value, value - market.f_max_ghz)
            if size > f_tol:
                found.append(Violation("bounds", (item,), float(size)))
    return found
