"""Contract maths over a batch of markets: many markets with the same K, one pass.

:class:`MarketBatch` stacks the numbers of B markets (B first in every array) and
:func:`score_menus` gives each market's menu its least-rent rewards, cloud utility and
violated-constraint count at once, which is what lets the RL designer
(``fed_agent.designer``) score a thousand markets in a few milliseconds. The per-period
closed form itself is ``fed_agent.contracts.closed_form.per_period_closed_form``, shared with the
single-market path (``score_f_menus``); tests/contracts/test_batch.py checks every function
here against the single-market contract model.

numpy only, like the rest of ``fed_agent.contracts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fed_agent import latency
from fed_agent.contracts.audit import DEFAULT_TOLERANCE
from fed_agent.contracts.closed_form import ex_ante_closed_form, per_period_closed_form
from fed_agent.contracts.constraints import value_scale
from fed_agent.contracts.market import MIN_LOG_ARGUMENT, Market

NEWTON_STEPS = 40


@dataclass(frozen=True)
class MarketBatch:
    """The numbers of B markets with the same K, stacked (B first in every array).

    Attributes
    ----------
    types, prior : np.ndarray
        (B, K).
    transition : np.ndarray
        (B, K, K).
    discount, workload, upload_s, kappa, omega, t_max, f_lo, f_hi : np.ndarray
        (B,); f_lo is the effective lower bound ``Market.f_lower_ghz``.
    ex_ante : np.ndarray
        (B,) bool: the market's participation rule is ex ante (else per period).
    closed_form : np.ndarray
        (B,) bool: a monotone transition matrix, where the closed-form rewards of either
        rule are least-cost whenever they are feasible and only downward constraints bind.
    """

    types: np.ndarray
    prior: np.ndarray
    transition: np.ndarray
    discount: np.ndarray
    workload: np.ndarray
    upload_s: np.ndarray
    kappa: np.ndarray
    omega: np.ndarray
    t_max: np.ndarray
    f_lo: np.ndarray
    f_hi: np.ndarray
    ex_ante: np.ndarray
    closed_form: np.ndarray

    @classmethod
    def from_markets(cls, markets: Sequence[Market]) -> MarketBatch:
        """Stack ``markets`` (all with the same number of types).

        Only raw fields are read per market; the derived quantities (upload time, effective
        lower bound of f, monotone transitions) are recomputed here for the whole batch with
        the formulas of ``Market`` and ``fed_agent.latency``, which is what keeps a batch of
        a thousand markets within a few milliseconds (a test checks both agree).
        """
        sizes = {m.num_types for m in markets}
        if len(sizes) != 1:
            raise ValueError(f"markets must share one number of types, got {sorted(sizes)}")

        def column(name: str) -> np.ndarray:
            return np.array([getattr(m, name) for m in markets], dtype=float)

        transition = np.stack([m.transition for m in markets])
        snr = (
            latency.dbm_to_watts(column("tx_power_dbm"))
            * column("channel_gain")
            / latency.dbm_to_watts(column("noise_dbm"))
        )
        upload = (
            latency.BITS_PER_BYTE
            * column("module_bytes")
            / (column("bandwidth_hz") * np.log2(1.0 + snr))
        )
        workload, t_max = column("workload_gcycles"), column("t_max_s")
        headroom = 1.0 + t_max - upload - MIN_LOG_ARGUMENT
        f_lo = np.where(
            headroom > 0,
            np.maximum(column("f_min_ghz"), workload / np.where(headroom > 0, headroom, 1.0)),
            np.inf,
        )
        tails = np.cumsum(transition[:, :, ::-1], axis=2)[:, :, ::-1]
        monotone = np.all(np.diff(tails, axis=1) >= -1e-12, axis=(1, 2))
        ex_ante = np.array([m.participation == "ex_ante" for m in markets])
        return cls(
            types=np.stack([m.types for m in markets]),
            prior=np.stack([m.prior for m in markets]),
            transition=transition,
            discount=column("discount"),
            workload=workload,
            upload_s=upload,
            kappa=column("kappa"),
            omega=column("omega"),
            t_max=t_max,
            f_lo=f_lo,
            f_hi=column("f_max_ghz"),
            ex_ante=ex_ante,
            closed_form=monotone,
        )

    @property
    def size(self) -> int:
        """Number of markets B."""
        return int(self.types.shape[0])

    @property
    def num_types(self) -> int:
        """Number of types K."""
        return int(self.types.shape[1])

    def value_of_work(self, f: np.ndarray) -> np.ndarray:
        """G(f) = omega ln(1 + T_max - W/f - S/r) for f of shape (B, ...); 0 for the exit
        item f = 0."""
        extra = (1,) * (f.ndim - 1)
        with np.errstate(divide="ignore"):
            headroom = (1 + self.t_max - self.upload_s).reshape(-1, *extra) - self.workload.reshape(
                -1, *extra
            ) / f
        value = self.omega.reshape(-1, *extra) * np.log(np.maximum(headroom, 1e-300))
        return np.where(f == 0, 0.0, value)

    def energy_cost(self, f: np.ndarray) -> np.ndarray:
        """c(f) = kappa W f^2 for f of shape (B, ...)."""
        extra = (1,) * (f.ndim - 1)
        return (self.kappa * self.workload).reshape(-1, *extra) * f * f

    def efficient_resource(self) -> np.ndarray:
        """Complete-information f per type, argmax G(f) - c(f)/theta, shape (B, K).

        The root above W/A of 2 kappa A f^3 - 2 kappa W f^2 - omega theta = 0 (A = 1 + T_max
        - S/r), found by Newton's method from a point where the cubic is positive: it is
        convex and increasing there, so the iterates decrease monotonically to the root.
        Clipped to [f_lo, f_hi], as ``fed_agent.contracts.solvers.efficient_resource``.
        """
        return self.efficient_resource_for(self.types)

    def efficient_resource_for(self, theta: np.ndarray) -> np.ndarray:
        """argmax_f G(f) - c(f)/theta for willingness values theta of shape (B, M), (B, M).

        See :meth:`efficient_resource`, which is this at the market's own types.
        """
        a = (1 + self.t_max - self.upload_s)[:, None]
        w, kappa = self.workload[:, None], self.kappa[:, None]
        target = self.omega[:, None] * theta
        f = w / a + np.cbrt(target / (2 * kappa * a))
        for _ in range(NEWTON_STEPS):
            value = 2 * kappa * f * f * (a * f - w) - target
            slope = 2 * kappa * f * (3 * a * f - 2 * w)
            f = f - value / slope
        return np.clip(f, self.f_lo[:, None], self.f_hi[:, None])

    def value_scale(self) -> np.ndarray:
        """The money scale of each market, (B,) (``fed_agent.contracts.constraints.value_scale``)."""
        return value_scale(self.omega, self.t_max, self.discount)

    def item_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Probability weights rho_i (B, K) and delta rho_i P_ij (B, K, K) of the items."""
        return self.prior, self.discount[:, None, None] * self.prior[:, :, None] * self.transition


def least_rent_rewards(
    f1: np.ndarray, f2: np.ndarray, batch: MarketBatch
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-cost rewards of each market's participation rule for menus of B markets.

    Period 2: the lowest type's participation and every local downward IC bind. Period 1:
    the intertemporal IC constraints are difference constraints in the period-1 (per
    period) or epoch (ex ante) rents, solved as longest paths. The closed forms of
    ``fed_agent.contracts.payments``, each row with its own market's numbers.

    Returns
    -------
    tuple[np.ndarray, np.ndarray, np.ndarray]
        r1 (B, K) (NaN rows where a positive cycle leaves no least rents), r2 (B, K, K) and
        a (B,) mask where only downward constraints bind (which, with a monotone transition
        matrix, certifies least cost).
    """
    x1, x2 = batch.energy_cost(f1), batch.energy_cost(f2)
    args = (x1, x2, 1.0 / batch.types, batch.transition, batch.discount)
    r1, r2, only_downward = per_period_closed_form(*args)
    if not batch.ex_ante.any():
        return r1, r2, only_downward
    e1, e2, e_down = ex_ante_closed_form(*args)
    rows = batch.ex_ante
    return (
        np.where(rows[:, None], e1, r1),
        np.where(rows[:, None, None], e2, r2),
        np.where(rows, e_down, only_downward),
    )


def count_violations(
    f1: np.ndarray, r1: np.ndarray, f2: np.ndarray, r2: np.ndarray, batch: MarketBatch
) -> np.ndarray:
    """Violated IR, period-2 IC and intertemporal IC constraints per market, (B,).

    IR is each market's rule: per period (every item) or ex ante (one lifetime IR per
    period-1 type). Uses the tolerance in money of ``fed_agent.contracts.audit``
    (``DEFAULT_TOLERANCE`` times each market's :func:`value_scale`).
    """
    k = batch.num_types
    inv = 1.0 / batch.types
    x1, x2 = batch.energy_cost(f1), batch.energy_cost(f2)
    tol = DEFAULT_TOLERANCE * batch.value_scale()
    per_period_ir = np.sum(x1 * inv - r1 > tol[:, None], axis=1) + np.sum(
        x2 * inv[:, None, :] - r2 > tol[:, None, None], axis=(1, 2)
    )
    # u2[b, i, j, m]: period-2 type j after history i taking item m
    u2 = r2[:, :, None, :] - x2[:, :, None, :] * inv[:, None, :, None]
    truthful2 = u2[:, :, np.arange(k), np.arange(k)]
    ic2 = np.sum(u2 - truthful2[..., None] > tol[:, None, None, None], axis=(1, 2, 3))
    # lifetime[b, i, h]: period-1 type i reporting h, then truthful in period 2
    period2 = r2 - x2 * inv[:, None, :]
    lifetime = (
        r1[:, None, :]
        - x1[:, None, :] * inv[:, :, None]
        + batch.discount[:, None, None] * np.einsum("bij,bhj->bih", batch.transition, period2)
    )
    truthful1 = lifetime[:, np.arange(k), np.arange(k)]
    ic1 = np.sum(lifetime - truthful1[..., None] > tol[:, None, None], axis=(1, 2))
    # ex ante: the epoch IR, and the enforceable commitment (held period-1 pay plus the
    # period-2 item covers the period-2 cost, fed_agent.contracts.constraints)
    ex_ante_ir = np.sum(-truthful1 > tol[:, None], axis=1) + np.sum(
        -(r1[:, :, None] + period2) > tol[:, None, None], axis=(1, 2)
    )
    return np.where(batch.ex_ante, ex_ante_ir, per_period_ir) + ic2 + ic1


def cloud_utility_batch(
    f1: np.ndarray, r1: np.ndarray, f2: np.ndarray, r2: np.ndarray, batch: MarketBatch
) -> np.ndarray:
    """Expected cloud utility per ES of B contracts under truthful self-selection, (B,)."""
    w1, w2 = batch.item_weights()
    period1 = np.sum(w1 * (batch.value_of_work(f1) - r1), axis=1)
    return period1 + np.sum(w2 * (batch.value_of_work(f2) - r2), axis=(1, 2))


def complete_information_utility(batch: MarketBatch) -> np.ndarray:
    """Cloud utility when the cloud sees the types (the upper bound), (B,), closed form."""
    f = batch.efficient_resource()
    surplus = batch.value_of_work(f) - batch.energy_cost(f) / batch.types
    w1, w2 = batch.item_weights()
    return np.sum(w1 * surplus, axis=1) + np.sum(w2 * surplus[:, None, :], axis=(1, 2))


@dataclass(frozen=True)
class ScoredMenus:
    """Rewards, utility and feasibility of B menus.

    Attributes
    ----------
    r1, r2 : np.ndarray
        (B, K) and (B, K, K) rewards of the least-rent structure.
    utility : np.ndarray
        (B,) cloud utility with those rewards.
    violations : np.ndarray
        (B,) number of violated constraints (0 = implementable by these rewards).
    certified : np.ndarray
        (B,) bool: feasible and provably least-cost (else the LP decides, see ``propose``).
    """

    r1: np.ndarray
    r2: np.ndarray
    utility: np.ndarray
    violations: np.ndarray
    certified: np.ndarray


def score_menus(f1: np.ndarray, f2: np.ndarray, batch: MarketBatch) -> ScoredMenus:
    """Closed-form rewards, utility and constraint count of menus for B markets."""
    r1, r2, only_downward = least_rent_rewards(f1, f2, batch)
    cycle = ~np.all(np.isfinite(r1), axis=1)
    r1 = np.where(np.isfinite(r1), r1, 0.0)
    r2 = np.where(np.isfinite(r2), r2, 0.0)  # ex ante: a cycle leaves no period-2 level
    violations = count_violations(f1, r1, f2, r2, batch) + cycle
    utility = cloud_utility_batch(f1, r1, f2, r2, batch)
    certified = (violations == 0) & only_downward & batch.closed_form
    return ScoredMenus(r1, r2, utility, violations, certified)
