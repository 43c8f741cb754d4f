"""The renegotiation-proof contract: period-2 menus the cloud would not replace after the reports.

With full commitment the cloud keeps the period-2 menus it signed, although after a truthful
report i a fresh one-period menu for its belief P[i, .] would pay it more
(``contracts/renegotiation.py``). A contract the cloud never wants to replace offers after
every report i a period-2 menu that is *sequentially optimal*: a one-period optimum for the
belief P[i, .] under what binds once the report is in, the period-2 IC and a walk-away IR at
0 in period 2 (an ES may refuse a re-offer, and the period-1 pay is paid either way), which
is exactly the re-offer ``renegotiation_gain`` values. Its renegotiation gain is 0.

Which menus are sequentially optimal. In costs x = c(f) the one-period problem maximises
sum_j P_ij (G(x_j) - R_j) over a polyhedron with G strictly concave, so the x of every item of
positive weight (P_ij > 0) is the same in every optimum, and so are their least rewards. Items
of weight 0 (a type the belief rules out) change nothing the cloud gets after report i, but a
period-1 type that misreports i may meet them, so they matter for the intertemporal IC. This
contract holds the positive-weight items at the one-period optimum and lets the solver choose
the weight-0 items (any that keep the menu IC and IR) jointly with the period-1 menu: the
cloud is indifferent among them ex post, and ex ante it takes the one that serves period 1
best. Then the period-1 menu is optimal given those continuations, with the model's
intertemporal IC (type i reporting h gets sum_k P_ik x the rent of type k in menu h).

Exact: each history's menu is a certified one-period optimum (``solve_tied``; with
``exclusion`` by branch and bound), the joint problem is the design problem with those items'
costs held and two more rows per history (walk-away IR; the expected period-2 pay at most the
optimum's, within ``PAY_TOLERANCE`` of the money scale), solved by the same certified solver,
with every intertemporal IC strict by ``STRICT_MARGIN`` (ties with a misreport would be
broken against the truth by an ES that ignores its type).
"""

from __future__ import annotations

import numpy as np

from fed_agent.contracts.constraints import (
    build_constraints,
    market_value_scale,
    period2_index,
)
from fed_agent.contracts.contract import DynamicContract
from fed_agent.contracts.market import Market
from fed_agent.contracts.response import TIE_TOLERANCE
from fed_agent.contracts.solvers.convex import solve_tied
from fed_agent.contracts.utility import energy_cost

PAY_TOLERANCE = 1e-10
"""How much more than the one-period optimum's expected pay (a share of the market's money
scale, ``constraints.value_scale``) a period-2 menu may cost: the solver's room, far below the
audit's 1e-9."""


STRICT_MARGIN = 10 * TIE_TOLERANCE
"""By how much (a share of the money scale) every truthful period-1 report beats every other.
Without commitment the ratchet makes upward intertemporal ICs bind too (on ``paper`` type 2
is indifferent between reporting 2 and 3), and an ES that breaks a tie by the type-free rule
of ``response.es_choice`` (the higher f) would misreport; with this margin no report ties
with the truth. It costs the cloud about 1e-7 of the money scale."""


class NoRenegotiationProofContract(ValueError):
    """No contract with truthful reports has sequentially optimal period-2 menus."""


def reoffer_market(market: Market, belief: np.ndarray) -> Market:
    """The one-period market the cloud faces after a report: ``market``'s period-2 economics
    with prior ``belief``, no period 2 (delta 0) and per period IR (an ES may leave)."""
    one_period = market.replace(prior=np.asarray(belief, float), discount=0.0)
    return one_period.replace(participation="per_period")


def period2_optimum(
    market: Market, belief: np.ndarray, exclusion: bool = False
) -> tuple[np.ndarray, np.ndarray, float]:
    """The sequentially optimal menu for ``belief``: (f, R, cloud value per ES), certified."""
    one_period = reoffer_market(market, belief)
    k = market.num_types
    identity = np.arange(k * (k + 1))
    result = solve_tied(one_period, identity, identity, exclusion=exclusion)
    f = np.where(
        result.f[:k] == 0, 0.0, np.clip(result.f[:k], market.f_lower_ghz, market.f_max_ghz)
    )
    return f, result.rewards[:k], result.lower_bound


def _extra_rows(market: Market, pay_caps: np.ndarray) -> tuple[np.ndarray, ...]:
    """The rows this contract adds, as ``(A_cost, A_reward, rhs)`` over the flat items: the
    walk-away IR of every period-2 item (R_ij - x_ij / theta_j >= 0), per history i
    sum_j P_ij R_ij <= pay_caps[i], and every intertemporal IC by ``STRICT_MARGIN``."""
    k = market.num_types
    walk_away = build_constraints(market.replace(participation="per_period"))
    rows = [
        m for m, (kind, index) in enumerate(walk_away.labels) if kind == "IR" and len(index) == 2
    ]
    system = build_constraints(market)
    strict = [m for m, (kind, _) in enumerate(system.labels) if kind == "IC_intertemporal"]
    caps = np.zeros((k, k * (k + 1)))
    for i in range(k):
        caps[i, [period2_index(i, j, k) for j in range(k)]] = market.transition[i]
    margin = STRICT_MARGIN * market_value_scale(market)
    return (
        np.vstack([walk_away.a_cost[rows], np.zeros_like(caps), system.a_cost[strict]]),
        np.vstack([walk_away.a_reward[rows], caps, system.a_reward[strict]]),
        np.concatenate([np.zeros(len(rows)), pay_caps, np.full(len(strict), -margin)]),
    )


def renegotiation_proof_solution(
    market: Market, exclusion: bool = False
) -> tuple[DynamicContract, float]:
    """The best contract whose period-2 menus are sequentially optimal (module docstring),
    with its certified relative gap. Raises :class:`NoRenegotiationProofContract` when no
    period-1 menu makes truthful reports optimal given those menus."""
    k = market.num_types
    fixed = np.full(k * (k + 1), np.nan)
    pay_caps = np.empty(k)
    slack = PAY_TOLERANCE * market_value_scale(market)
    for i in range(k):
        f, rewards, _ = period2_optimum(market, market.transition[i], exclusion)
        used = market.transition[i] > 0
        index = [period2_index(i, j, k) for j in range(k)]
        fixed[np.array(index)[used]] = energy_cost(f[used], market)
        pay_caps[i] = market.transition[i] @ rewards + slack
    identity = np.arange(k * (k + 1))
    try:
        result = solve_tied(
            market,
            identity,
            identity,
            exclusion=exclusion,
            fixed_cost=fixed,
            extra_rows=_extra_rows(market, pay_caps),
        )
    except RuntimeError as err:
        raise NoRenegotiationProofContract(
            "no renegotiation-proof contract: no period-1 menu makes truthful reports optimal "
            f"given the sequentially optimal period-2 menus ({err})"
        ) from err
    f = np.where(result.f == 0, 0.0, np.clip(result.f, market.f_lower_ghz, market.f_max_ghz))
    gap = (result.upper_bound - result.lower_bound) / (1.0 + abs(result.lower_bound))
    return DynamicContract.from_flat(f, result.rewards, k), max(gap, 0.0)
