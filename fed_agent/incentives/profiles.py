"""An ES's profile, and the market the cloud designs for it.

"Profile" means one thing in this project: what an ES's SuperNode node config says about it
(the keys below; ``fed-agent deploy supernode --profile`` writes them). It has a public part,
:class:`PublicFacts` (the workload of building the module on that ES and its uplink channel
gain, which the cloud may know), and a private part, :class:`Willingness` (its willingness
type now and how it drifts, which never leaves the ES). A simulated ES has no such keys: its
profile is derived from its partition id and the seed (:func:`simulated_profiles`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fed_agent.contracts import Market, MarketParams, willingness_path
from fed_agent.incentives.config import IncentiveConfig
from fed_agent.protocol import ProtocolError, read_number
from fed_agent.seeding import derive_seed, rng_for

WORKLOAD = "workload-gcycles"
CHANNEL_GAIN = "channel-gain"
WILLINGNESS_TYPE = "willingness-type"
WILLINGNESS_SEED = "willingness-seed"


@dataclass(frozen=True)
class PublicFacts:
    """The public part of an ES's profile (reported to the cloud on first contact)."""

    workload_gcycles: float
    channel_gain: float

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not 0 < value < np.inf:
                raise ValueError(f"public facts: {name} must be a finite number > 0, got {value}")

    def to_dict(self) -> dict[str, float]:
        """Message/node-config form."""
        return {WORKLOAD: self.workload_gcycles, CHANNEL_GAIN: self.channel_gain}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> PublicFacts:
        """Parse the message/node-config form: both keys, each a finite number > 0 (an int or
        a float, never a string).

        Raises
        ------
        ProtocolError
            Naming the key and what it holds.
        """
        kind = "public facts"
        missing = [k for k in (WORKLOAD, CHANNEL_GAIN) if k not in values]
        if missing:
            raise ProtocolError(f"{kind}: missing keys {missing}")
        facts = [read_number(kind, k, values[k]) for k in (WORKLOAD, CHANNEL_GAIN)]
        try:
            return cls(*facts)
        except ValueError as err:
            raise ProtocolError(str(err)) from err


@dataclass(frozen=True)
class Willingness:
    """The private part of an ES's profile: its first period's willingness type and the seed of
    its private Markov chain over types."""

    initial_type: int
    chain_seed: int

    def type_at(self, market: Market, period_index: int) -> int:
        """The type in global period ``period_index`` (0-based), by the market's chain."""
        if period_index < 0:
            raise ValueError(f"period index must be >= 0, got {period_index}")
        rng = np.random.default_rng(self.chain_seed)
        path = willingness_path(
            market, rng, period_index // 2 + 1, initial=np.array([self.initial_type])
        )
        return int(path.reshape(-1)[period_index])


def simulated_profiles(
    seed: int, partition_id: int, params: MarketParams, incentive: IncentiveConfig
) -> tuple[PublicFacts, Willingness]:
    """The deterministic profile of a virtual ES (what a SuperNode's node config would carry)."""
    rng = rng_for(seed, "es-profile", partition_id)
    spread = incentive.workload_spread
    workload = params.workload_gcycles * float(rng.uniform(1 - spread, 1 + spread))
    gain_db = float(rng.uniform(-1, 1)) * incentive.channel_gain_spread_db
    public = PublicFacts(workload, params.channel_gain * 10 ** (gain_db / 10))
    market = Market.from_params(params)
    initial = int(rng.choice(market.num_types, p=market.prior))
    return public, Willingness(initial, derive_seed(seed, "willingness-chain", partition_id))


def es_market(
    params: MarketParams,
    public: PublicFacts,
    module_bytes: float | None,
    belief: np.ndarray | None,
) -> Market:
    """The market of one ES: the configured market with its public facts and the cloud's belief.

    ``module_bytes`` None keeps the configured size: an ES's own choice of item does not depend
    on the upload time, so it need not build the module to answer an offer.
    """
    changes: dict[str, object] = dict(
        workload_gcycles=public.workload_gcycles, channel_gain=public.channel_gain
    )
    if module_bytes is not None:
        changes["module_bytes"] = float(module_bytes)
    market = Market.from_params(dataclasses.replace(params, **changes))
    if belief is None:
        return market
    # the belief replaces the prior; the type dynamics stay the configured market's
    return market.replace(prior=np.asarray(belief, dtype=float))


def check_simulated_markets(params: MarketParams, incentive: IncentiveConfig) -> None:
    """Refuse settings under which a simulated ES could get no valid market.

    The ES with the most work (``workload_spread`` above the market's workload) on the weakest
    uplink (``channel_gain_spread_db`` below its gain) needs the highest f; its market must
    still have a non-empty range of f, or the run would fail at that ES's first offer.
    """
    worst = (
        params.workload_gcycles * (1 + incentive.workload_spread),
        params.channel_gain * 10 ** (-incentive.channel_gain_spread_db / 10),
    )
    try:
        es_market(params, PublicFacts(*worst), None, None)
    except ValueError as err:
        raise ValueError(
            "incentive.workload_spread and incentive.channel_gain_spread_db: the simulated ES "
            f"with workload {worst[0]:.4g} Gcycles and channel gain {worst[1]:.4g} has no valid "
            f"market ({err})"
        ) from err


DEADLINE_MARGIN = 1e-6
"""Relative margin by which a deadline's f floor sits above W / (D - S/r), so that an item at
the floor (an exact optimum often sits there) meets the deadline despite rounding."""


def deadline_market(market: Market, deadline_s: float) -> Market | None:
    """The market with f raised so that every item meets the round's deadline, or None.

    An item (f, R) takes W / f + S / r seconds to build and upload; it meets a deadline D when
    f >= W / (D - S / r). Designing the contracts on the market with that floor makes every
    offered item fast enough to be chosen: selection under a deadline then never discards an
    accepted item for its latency, and the contract prices the effort the deadline needs.
    None when no f up to ``f_max_ghz`` meets D (the upload alone, or W / f_max, is too slow):
    such an ES gets no offer.
    """
    compute_s = deadline_s - market.upload_s
    if compute_s <= 0:
        return None
    floor = market.workload_gcycles / compute_s * (1 + DEADLINE_MARGIN)
    if floor >= market.f_max_ghz:
        return None
    if floor <= market.f_lower_ghz:
        return market
    return market.replace(f_min_ghz=floor)


def period_of_round(server_round: int, rounds_per_period: int) -> tuple[int, int]:
    """(global period index from 0, period within the epoch: 1 or 2) of a 1-based round."""
    index = (server_round - 1) // rounds_per_period
    return index, index % 2 + 1


def period_weight(period: int, discount: float) -> float:
    """How the contract model's objective weighs a period's utility (U = U1 + delta U2,
    docs/contract-model.md): 1 in period 1, the market's discount in period 2."""
    return 1.0 if period == 1 else discount


__all__ = [
    "CHANNEL_GAIN",
    "WILLINGNESS_SEED",
    "WILLINGNESS_TYPE",
    "WORKLOAD",
    "PublicFacts",
    "Willingness",
    "deadline_market",
    "period_weight",
    "es_market",
    "period_of_round",
    "simulated_profiles",
]
