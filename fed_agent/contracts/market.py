"""The contract market: the facts the cloud knows when it designs a two-period contract.

``MarketParams`` is the one home of the defaults table of docs/contract-model.md (a plain
dataclass that Hydra uses as the schema of the ``market`` config group); ``Market`` is the
validated, numpy-backed value object that every other module of ``fed_agent.contracts`` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from numbers import Real

import numpy as np

from fed_agent import latency
from fed_agent.choices import check_choice
from fed_agent.contracts.transitions import neighbour_transition, persistence_transition

PARTICIPATION_RULES = ("per_period", "ex_ante")
COMMITMENTS = ("full", "renegotiation_proof")
"""What the cloud's period-2 promise rests on (``MarketParams.commitment``)."""
# G(f) = omega ln(1 + T_max - T(f)) is -inf where 1 + T_max - T(f) <= 0; the effective lower
# bound of f keeps the log argument at least this large so that G stays finite.
MIN_LOG_ARGUMENT = 1e-3
_PROB_TOL = 1e-8


MAX_TYPES = 10
"""Largest K a market may have: the exact solver's LPs grow with K^2 (K = 10: 110 items)."""
DOMAINS: dict[str, tuple[float, float, str]] = {
    # field: (low, high, which ends are open: "()" "(]" "[)" "[]")
    "theta_min": (0.0, np.inf, "()"),
    "theta_max": (0.0, np.inf, "()"),
    "transition_stay": (0.0, 1.0, "[]"),
    "persistence": (-1.0, 1.0, "[]"),
    "discount": (0.0, 1.0, "[]"),
    "workload_gcycles": (0.0, np.inf, "()"),
    "module_bytes": (0.0, np.inf, "[)"),
    "bandwidth_hz": (0.0, np.inf, "()"),
    "tx_power_dbm": (-np.inf, np.inf, "()"),
    "channel_gain": (0.0, np.inf, "()"),
    "noise_dbm": (-np.inf, np.inf, "()"),
    "kappa": (0.0, np.inf, "()"),
    "omega": (0.0, np.inf, "()"),
    "t_max_s": (0.0, np.inf, "()"),
    "f_min_ghz": (0.0, np.inf, "()"),
    "f_max_ghz": (0.0, np.inf, "()"),
}
"""The domain of every scalar market field; :class:`MarketParams` refuses a value outside."""


def check_in_domain(name: str, value: object) -> None:
    """Raise ``ValueError("<name>: must be in <range>, got <value>")`` outside the domain."""
    low, high, ends = DOMAINS[name]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        number = float("nan")
    above = number > low if ends[0] == "(" else number >= low
    below = number < high if ends[1] == ")" else number <= high
    if isinstance(value, bool) or not (above and below):
        raise ValueError(
            f"market.{name}: must be in {ends[0]}{low:g}, {high:g}{ends[1]}, got {value!r}"
        )


@dataclass
class MarketParams:
    """Plain configuration of a market: the defaults table of docs/contract-model.md.

    Only int/float/str/bool/list/Optional fields, so that it works as a Hydra/OmegaConf
    structured config. ``types``, ``prior`` and ``transition`` override the generated values
    when given. Every scalar is checked against :data:`DOMAINS` on construction (so a bad
    override fails when the config is loaded, naming the field and its range).
    """

    num_types: int = 3
    theta_min: float = 0.2
    theta_max: float = 2.0
    types: list[float] | None = None
    prior: list[float] | None = None  # None = uniform
    persistence: float | None = -0.8
    """Persistence p of willingness (transitions.persistence_transition): 1 persistent,
    0 i.i.d., -1 reversal; the default, a strong reversal with ex ante participation and
    discount 0.5, is where a dynamic contract beats a static menu (docs/contract-model.md,
    "Where dynamics pay off"). None: the neighbour transition with ``transition_stay``."""
    transition_stay: float = 0.7
    """Diagonal of the neighbour transition (used when ``persistence`` is None)."""
    transition: list[list[float]] | None = None
    discount: float = 0.5
    """Weight delta of period 2 (0.5: a period is a round, and an ES's next round is worth
    half of this one to the cloud, which wants a good agent soon)."""
    workload_gcycles: float = 20.0
    module_bytes: float = 2e6
    bandwidth_hz: float = 20e6
    tx_power_dbm: float = 23.0
    channel_gain: float = 1e-8
    noise_dbm: float = -100.0
    kappa: float = 0.2
    omega: float = 30.0
    t_max_s: float = 25.0
    f_min_ghz: float = 1.0
    f_max_ghz: float = 5.0
    participation: str = "ex_ante"
    """``ex_ante``: an ES commits to both periods of an epoch once it knows its period-1 type
    (the federation enforces it by holding back period-1 pay); ``per_period``: it may leave
    in any period."""
    commitment: str = "full"
    """``full``: the cloud keeps the period-2 menus it signed (the model's contract);
    ``renegotiation_proof``: it offers the exact renegotiation-proof contract, whose period-2
    menus it would not replace after the reports (docs/contract-model.md, "What an ES is
    guaranteed"); the contract designer's proposals are then not used."""

    def __post_init__(self) -> None:
        if isinstance(self.num_types, bool) or not (
            isinstance(self.num_types, int) and 2 <= self.num_types <= MAX_TYPES
        ):
            raise ValueError(
                f"market.num_types: must be an integer in [2, {MAX_TYPES}], got {self.num_types!r}"
            )
        for name in DOMAINS:
            value = getattr(self, name)
            if value is not None or name != "persistence":
                check_in_domain(name, value)
        if self.theta_max <= self.theta_min:
            raise ValueError(
                f"market.theta_max: must be > theta_min = {self.theta_min}, got {self.theta_max}"
            )
        if self.f_max_ghz <= self.f_min_ghz:
            raise ValueError(
                f"market.f_max_ghz: must be > f_min_ghz = {self.f_min_ghz}, got {self.f_max_ghz}"
            )
        check_choice("participation", self.participation, PARTICIPATION_RULES)
        check_choice("market.commitment", self.commitment, COMMITMENTS)
        self._check_lists()
        # the market these settings build (type order, probabilities, the range of f) is
        # checked here too, so a bad one fails when the config loads, not inside a run
        try:
            Market.from_params(self)
        except ValueError as err:
            raise ValueError(f"market.{err}") from err

    def _check_lists(self) -> None:
        """``types`` and ``prior`` hold K numbers and ``transition`` K rows of K, when given."""
        k = self.num_types
        for name, values in (("types", self.types), ("prior", self.prior)):
            if values is not None:
                _check_number_list(name, values, k)
        if self.transition is not None:
            rows = self.transition
            if isinstance(rows, str) or not isinstance(rows, Sequence) or len(rows) != k:
                raise ValueError(
                    f"market.transition: must be a list of num_types = {k} rows, got {rows!r}"
                )
            for i, row in enumerate(rows):
                _check_number_list(f"transition[{i}]", row, k)


def _check_number_list(name: str, values: object, length: int) -> None:
    """Refuse anything but a list of ``length`` real numbers (finiteness: ``Market``)."""
    if (
        isinstance(values, str)
        or not isinstance(values, Sequence)
        or len(values) != length
        or any(isinstance(v, bool) or not isinstance(v, Real) for v in values)
    ):
        raise ValueError(
            f"market.{name}: must be a list of num_types = {length} numbers, got {values!r}"
        )


def _frozen_array(values: object, name: str, ndim: int) -> np.ndarray:
    array = np.array(values, dtype=float)
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: every entry must be finite, got {array.tolist()}")
    array.setflags(write=False)
    return array


def _require_positive(name: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")


@dataclass(frozen=True, eq=False)
class Market:
    """A validated market of K willingness types (see docs/contract-model.md).

    Attributes
    ----------
    types : np.ndarray
        Willingness values theta, shape (K,), strictly increasing and positive.
    prior : np.ndarray
        Period-1 type distribution rho, shape (K,), a probability vector.
    transition : np.ndarray
        P[i, j] = Pr(period-2 type j | period-1 type i), shape (K, K), row-stochastic.
    discount : float
        Weight delta of period 2, in [0, 1].
    workload_gcycles, module_bytes, bandwidth_hz, tx_power_dbm, channel_gain, noise_dbm : float
        Construction workload W, module size S and the uplink of ``fed_agent.latency``.
    kappa, omega, t_max_s : float
        Energy coefficient, value weight and latency bound of c(f) and G(f).
    f_min_ghz, f_max_ghz : float
        Bounds of the computing resource f.
    participation : str
        ``"per_period"`` (an ES can leave in any period) or ``"ex_ante"`` (one IR per epoch).
    """

    types: np.ndarray
    prior: np.ndarray
    transition: np.ndarray
    # No defaults here: MarketParams is the one home of the defaults table.
    discount: float
    workload_gcycles: float
    module_bytes: float
    bandwidth_hz: float
    tx_power_dbm: float
    channel_gain: float
    noise_dbm: float
    kappa: float
    omega: float
    t_max_s: float
    f_min_ghz: float
    f_max_ghz: float
    participation: str
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        types = _frozen_array(self.types, "types", 1)
        if types.size == 0:
            raise ValueError("types: need at least one willingness type")
        if np.any(types <= 0):
            raise ValueError(f"types: every type must be > 0, got {types.tolist()}")
        if np.any(np.diff(types) <= 0):
            raise ValueError(f"types: must be strictly increasing, got {types.tolist()}")
        k = types.size
        prior = _frozen_array(self.prior, "prior", 1)
        if prior.shape != (k,):
            raise ValueError(f"prior: expected shape ({k},) to match types, got {prior.shape}")
        if np.any(prior < 0) or abs(prior.sum() - 1.0) > _PROB_TOL:
            raise ValueError(
                f"prior: must be a probability vector (entries >= 0, sum 1), got {prior.tolist()}"
            )
        transition = _frozen_array(self.transition, "transition", 2)
        if transition.shape != (k, k):
            raise ValueError(
                f"transition: must be square K x K with K = {k} types, got {transition.shape}"
            )
        if np.any(transition < 0) or np.any(np.abs(transition.sum(axis=1) - 1.0) > _PROB_TOL):
            raise ValueError(
                "transition: must be row-stochastic (entries >= 0, every row sums to 1), "
                f"got row sums {transition.sum(axis=1).tolist()}"
            )
        if not (0.0 <= self.discount <= 1.0):
            raise ValueError(f"discount: must lie in [0, 1], got {self.discount!r}")
        for name in (
            "workload_gcycles",
            "module_bytes",
            "bandwidth_hz",
            "channel_gain",
            "kappa",
            "omega",
            "t_max_s",
            "f_min_ghz",
            "f_max_ghz",
        ):
            _require_positive(name, float(getattr(self, name)))
        for name in ("tx_power_dbm", "noise_dbm"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"{name}: must be finite, got {getattr(self, name)!r}")
        if self.f_min_ghz >= self.f_max_ghz:
            raise ValueError(
                f"f_min_ghz/f_max_ghz: bounds must be non-empty (f_min < f_max), got "
                f"[{self.f_min_ghz}, {self.f_max_ghz}]"
            )
        check_choice("participation", self.participation, PARTICIPATION_RULES)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "prior", prior)
        object.__setattr__(self, "transition", transition)
        self._check_scales()
        if self.f_lower_ghz >= self.f_max_ghz:
            raise ValueError(
                "f_max_ghz: the latency bound t_max_s needs f >= "
                f"{self.f_lower_ghz:.4g} GHz (1 + T_max - T(f) > 0), above f_max_ghz = "
                f"{self.f_max_ghz}; the bounds of f are empty"
            )

    def _check_scales(self) -> None:
        """Refuse finite settings whose derived quantities are not: each field may be in its
        domain while the uplink rate, the upload time, the largest energy cost or the value
        scale overflows to infinity or underflows to 0 (``noise_dbm=1e300`` is a noise of
        inf W, a rate of 0 and an upload that never ends; a workload of 5e-324 makes the
        energy cost 0), which every solver would then divide by or feed to its LP."""
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            rate = self.uplink_rate_bps
            upload = latency.upload_latency_s(self.module_bytes, rate) if rate > 0 else np.inf
            cost = latency.construction_cost(self.f_max_ghz, self.workload_gcycles, self.kappa)
            least = latency.construction_cost(self.f_min_ghz, self.workload_gcycles, self.kappa)
            rent = cost / self.types[0]
            scale = (1.0 + self.discount) * self.omega * np.log1p(self.t_max_s)
        if not (np.isfinite(rate) and rate > 0):
            raise ValueError(
                "bandwidth_hz/tx_power_dbm/channel_gain/noise_dbm: the uplink rate "
                f"B log2(1 + p h / N0) must be a finite number > 0, got {rate!r} bit/s"
            )
        if not np.isfinite(upload):
            raise ValueError(
                f"module_bytes: the upload S / r at {rate:.4g} bit/s must be finite, got {upload!r}"
            )
        if not (np.isfinite(cost) and np.isfinite(rent)):
            raise ValueError(
                "kappa: the energy cost kappa W f_max^2 over the smallest type must be finite, "
                f"got {float(rent)!r} (kappa={self.kappa}, W={self.workload_gcycles}, "
                f"f_max={self.f_max_ghz}, theta={self.types[0]})"
            )
        if not least > 0:
            raise ValueError(
                "kappa/workload_gcycles: the energy cost kappa W f_min^2 must be > 0 (the "
                f"solvers divide by kappa W), got {float(least)!r} (kappa={self.kappa}, "
                f"W={self.workload_gcycles}, f_min={self.f_min_ghz})"
            )
        if not np.isfinite(scale):
            raise ValueError(
                "omega: the value scale (1 + delta) omega ln(1 + t_max_s) must be finite, got "
                f"{float(scale)!r}"
            )

    @property
    def num_types(self) -> int:
        """Number K of willingness types."""
        return int(self.types.size)

    @property
    def uplink_rate_bps(self) -> float:
        """Uplink rate r = B log2(1 + p h / N0) in bit/s."""
        return latency.uplink_rate_bps(
            self.bandwidth_hz, self.tx_power_dbm, self.channel_gain, self.noise_dbm
        )

    @property
    def upload_s(self) -> float:
        """Upload time of the module, S / r, in seconds."""
        return latency.upload_latency_s(self.module_bytes, self.uplink_rate_bps)

    @property
    def f_lower_ghz(self) -> float:
        """Effective lower bound of f: ``f_min_ghz``, raised so that 1 + T_max - T(f) stays
        at least ``MIN_LOG_ARGUMENT`` (G(f) finite)."""
        headroom = 1.0 + self.t_max_s - self.upload_s - MIN_LOG_ARGUMENT
        if headroom <= 0:
            return float("inf")
        return max(self.f_min_ghz, self.workload_gcycles / headroom)

    @property
    def transition_is_monotone(self) -> bool:
        """True when a higher period-1 type makes every higher period-2 type more likely
        (first-order stochastic dominance of consecutive rows of P)."""
        tails = np.cumsum(self.transition[:, ::-1], axis=1)[:, ::-1]
        return bool(np.all(np.diff(tails, axis=0) >= -1e-12))

    @classmethod
    def from_params(cls, params: MarketParams) -> Market:
        """Build a validated market from its plain configuration."""
        k = int(params.num_types)
        if k < 1:
            raise ValueError(f"num_types: must be >= 1, got {k}")
        # list(...) also accepts OmegaConf ListConfig values from a Hydra config
        if params.types is not None:
            types = np.asarray(list(params.types), dtype=float)
        elif k == 1:
            types = np.array([params.theta_max], dtype=float)
        else:
            types = np.linspace(params.theta_min, params.theta_max, k)
        prior = np.full(k, 1.0 / k) if params.prior is None else np.asarray(list(params.prior))
        if params.transition is not None:
            transition = np.asarray([list(row) for row in params.transition], dtype=float)
        elif params.persistence is not None:
            transition = persistence_transition(k, params.persistence, prior)
        else:
            transition = neighbour_transition(k, params.transition_stay)
        scalars = {
            f.name: getattr(params, f.name)
            for f in fields(params)
            if f.name not in {"num_types", "theta_min", "theta_max", "types", "prior", "transition"}
            and f.name not in {"transition_stay", "persistence", "commitment"}
        }
        return cls(types=types, prior=prior, transition=transition, **scalars)

    def replace(self, **changes: object) -> Market:
        """A copy with some fields changed (validated again)."""
        values = {
            f.name: getattr(self, f.name) for f in fields(self) if f.init and f.name != "_derived"
        }
        values.update(changes)
        return Market(**values)


_PERSISTENT = {"persistence": None, "participation": "per_period"}
_UNCORRELATED = {"persistence": 0.0, "participation": "per_period", "discount": 0.9}
NAMED_MARKETS = {
    # the defaults table: a strong reversal of willingness (p = -0.8) with ex ante
    # participation and discount 0.5, where the dynamic contract pays (docs/contract-model.md)
    "default": MarketParams(),
    "paper": MarketParams(num_types=5),
    # the earlier default: neighbour transition (stay 0.7), per-period participation,
    # discount 0.9, where a static menu is within 0.1 % of the dynamic optimum
    "persistent": MarketParams(discount=0.9, **_PERSISTENT),
    "persistent_paper": MarketParams(num_types=5, discount=0.9, **_PERSISTENT),
    # i.i.d. types (persistence 0): every row of P is the prior
    "uncorrelated": MarketParams(**_UNCORRELATED),
    "uncorrelated_paper": MarketParams(num_types=5, **_UNCORRELATED),
    # the default's family name (benchmark tables use it)
    "reversal": MarketParams(),
    "reversal_paper": MarketParams(num_types=5),
}


def named_market(name: str, participation: str | None = None) -> Market:
    """The fixed market called ``name`` (a key of ``NAMED_MARKETS``): ``"default"`` (K = 3),
    ``"paper"`` (its K = 5 sibling), ``persistent`` (the earlier default), ``uncorrelated``
    and ``reversal`` (= default), each with a K = 5 ``*_paper`` sibling."""
    check_choice("market", name, NAMED_MARKETS)
    market = Market.from_params(NAMED_MARKETS[name])
    return market if participation is None else market.replace(participation=participation)


@dataclass(frozen=True)
class MarketRanges:
    """Ranges (low, high) of domain randomisation around the defaults of ``MarketParams``.

    ``transition`` is ``"neighbour"`` (the neighbour structure with a random diagonal, whose
    rows dominate each other stochastically for ``stay >= 0.5``), ``"persistence"`` (the
    persistence family around the drawn prior, p drawn from ``persistence``) or
    ``"dirichlet"`` (any row-stochastic matrix, rows drawn from a Dirichlet distribution).
    """

    theta_min: tuple[float, float] = (0.1, 0.5)
    theta_span: tuple[float, float] = (0.5, 2.5)
    prior_concentration: float = 5.0
    transition: str = "neighbour"
    transition_stay: tuple[float, float] = (0.5, 0.9)
    persistence: tuple[float, float] = (-1.0, 1.0)
    discount: tuple[float, float] = (0.5, 1.0)
    workload_gcycles: tuple[float, float] = (10.0, 30.0)
    module_bytes: tuple[float, float] = (1e6, 8e6)
    kappa: tuple[float, float] = (0.1, 0.3)
    omega: tuple[float, float] = (15.0, 45.0)
    t_max_s: tuple[float, float] = (20.0, 40.0)
    participation: str = "per_period"

    def __post_init__(self) -> None:
        check_choice("transition", self.transition, ("neighbour", "persistence", "dirichlet"))
        check_choice("participation", self.participation, PARTICIPATION_RULES)


def sample_market(rng: np.random.Generator, ranges: MarketRanges, num_types: int) -> Market:
    """Draw one market of ``num_types`` types uniformly within ``ranges``."""

    def draw(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    theta_min = draw(ranges.theta_min)
    types = np.linspace(theta_min, theta_min + draw(ranges.theta_span), num_types)
    if num_types == 1:
        types = np.array([theta_min])
    prior = rng.dirichlet(np.full(num_types, ranges.prior_concentration))
    # keep every type possible: a zero-probability type would leave its items undetermined
    prior = (prior + 0.01) / (prior + 0.01).sum()
    if ranges.transition == "neighbour":
        transition = neighbour_transition(num_types, draw(ranges.transition_stay))
    elif ranges.transition == "persistence":
        # around the uniform distribution: the drawn prior stands for the cloud's belief
        # about one ES (a federation market), not for how types move
        transition = persistence_transition(num_types, draw(ranges.persistence))
    else:
        transition = rng.dirichlet(np.ones(num_types), size=num_types)
    params = MarketParams(
        num_types=num_types,
        types=types.tolist(),
        prior=prior.tolist(),
        transition=transition.tolist(),
        discount=draw(ranges.discount),
        workload_gcycles=draw(ranges.workload_gcycles),
        module_bytes=draw(ranges.module_bytes),
        kappa=draw(ranges.kappa),
        omega=draw(ranges.omega),
        t_max_s=draw(ranges.t_max_s),
        participation=ranges.participation,
    )
    return Market.from_params(params)


def federation_ranges(params: MarketParams) -> MarketRanges:
    """The per-ES markets a federated run builds around the configured market.

    Each ES's market has the configured economics, with its own workload (public, varying
    around W), its measured module upload and the cloud's belief about its type as the prior
    (uniform before its first choice, a row of P after), so: workload, module size and prior
    vary, everything else is the configured market's.
    """

    def fixed(value: float) -> tuple[float, float]:
        return (value, value)

    structure = (
        {"transition": "persistence", "persistence": fixed(params.persistence)}
        if params.persistence is not None
        else {"transition": "neighbour", "transition_stay": fixed(params.transition_stay)}
    )
    return MarketRanges(
        theta_min=fixed(params.theta_min),
        theta_span=fixed(params.theta_max - params.theta_min),
        prior_concentration=1.0,
        discount=fixed(params.discount),
        workload_gcycles=(0.5 * params.workload_gcycles, 1.5 * params.workload_gcycles),
        module_bytes=(5e4, 2e7),
        kappa=fixed(params.kappa),
        omega=fixed(params.omega),
        t_max_s=fixed(params.t_max_s),
        participation=params.participation,
        **structure,
    )
