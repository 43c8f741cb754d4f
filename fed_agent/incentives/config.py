"""Settings of the contract-driven federation: the one home of their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from fed_agent.choices import check_choice
from fed_agent.validation import check_flags, check_number

POLICIES = (
    "fedavg_flat_fee",
    "uniform",
    "static",
    "complete_information",
    "optimal",
    "edmsac",
    "dmsac",
    "ppo",
    "none",
)
"""``none``: no contract at all; the ServerApp runs Flower's own FedAvg (strategies/baseline.py)."""
SELECTION_RULES = ("surplus", "random", "deadline", "latency_priced")
OFFER_TARGETINGS = ("uniform", "surplus")


@dataclass
class IncentiveConfig:
    """How the cloud recruits ESs with contracts each round."""

    policy: str = "edmsac"
    """Who designs the contracts; see POLICIES (fedavg_flat_fee: a flat fee for a fixed
    effort; none: no contract, Flower's FedAvg)."""
    designer_checkpoint: str = ""
    """Checkpoint of a learned designer; empty = the shipped one for edmsac/dmsac."""
    rounds_per_period: int = 1
    max_offers_per_round: int = 100
    """Offers go to at most this many connected ESs per period-1 round (``offer_targeting``)."""
    offer_targeting: str = "uniform"
    """Which connected ESs a period-1 round's offers go to when there are more than
    ``max_offers_per_round``: ``uniform``, a seeded uniform sample (only the sampled ESs are
    asked for their public facts; central DP is accounted with amplification by this
    sampling); ``surplus``, the ESs whose work the cloud expects to be worth most: each
    connected ES is asked for its public facts once, and the offers go to the largest
    complete-information surpluses of their markets (under the ``deadline`` rule, the
    deadline's market), averaged over the cloud's belief about each ES's type, ties by a
    seeded draw (``fed_agent.incentives.capacity.expected_surpluses``). Targeted offers are no
    random sample: central DP is then accounted at rate 1, and ESs with much work or a weak
    uplink may never be offered, so their data may never be learned from."""
    selection: str = "surplus"
    """Who of the accepting ESs takes part (at most federation.es_per_round) and so how long
    the round lasts (its slowest participant's W/f + S/r); fed_agent.incentives.selection:
    ``surplus`` keeps the largest cloud surpluses G(f) - R of the chosen items (ties by a
    seeded draw); ``random`` draws uniformly with the round's seed; ``deadline`` keeps the
    largest positive surpluses among the ESs that meet ``deadline_s``; ``latency_priced``
    maximises total surplus minus ``latency_price`` times the round's latency."""
    latency_price: float = 20.0
    """``latency_priced``: what one second of round latency costs the cloud, in units of cloud
    utility (G(f) - R) per round (20: about a third of a participant's mean surplus on the
    default market, so an ES is worth waiting for if it adds more surplus than the wait costs)."""
    deadline_s: float = 6.0
    """``deadline``: the longest modelled latency W/f + S/r (seconds) an ES may take to be
    chosen. Designed contracts meet it by design: each ES's menu is designed with
    f >= W / (D - S/r) (``profiles.deadline_market``), and an ES that cannot meet it even at
    f_max gets no offer. The flat fee's fixed effort is not designed: its ESs whose item misses
    the deadline are not chosen and not paid. (6: about the flat fee's round latency with 3 of
    20 ESs a round, docs/strategy.md "Measured: straggler-aware recruitment".)"""
    repeat_value: float = 1.0
    """When choosing participants, the cloud values the work of an ES that has trained in ``n``
    earlier rounds of the run at ``repeat_value ** n`` x G(f): the module has learned part of
    that ES's data already. 1 ignores it: then, by surplus, the same cheapest ESs can train
    every round and the ESs whose data they lack never do. Selection only: contracts,
    payments and the recorded cloud utility are unchanged."""
    exclusion: bool = False
    """Contracts may give a type the exit item (f = 0, R = 0): that type does no work and is
    paid nothing for work (docs/contract-model.md, "Exclusion"). An ES that takes an exit item
    gets no TRAIN and is recorded ``excluded``; under ex ante its period-2 exit still carries
    the deferred pay of its period-1 work. The exact policies solve with exit items; the guard
    solves exactly with them where a learned designer is not trusted, which under the
    ``deadline`` rule is every market (the designers were trained without a deadline's floor
    on f). False: every type takes a working item, as the shipped designers assume."""
    price_places: bool = True
    """``deadline`` with ``exclusion``: each ES's contract is designed for its work's value
    less the price of a place in the round, at the price whose offers earn the most for the
    round's ``federation.es_per_round`` places (``fed_agent.incentives.capacity``; no price is
    one candidate): with more offers than places, types not worth a place get the exit item
    and the more willing types are paid no rent for them. False: every contract is designed
    as if each ES's work were always used."""
    flat_fee: float = 35.0
    """fedavg_flat_fee: the reward for the fixed effort (an ES whose cost exceeds it leaves)."""
    flat_fee_f_ghz: float = 3.0
    """fedavg_flat_fee: the fixed computing resource asked of everyone."""
    workload_spread: float = 0.5
    """Simulated ESs' workloads vary by this factor around the market's (public facts)."""
    channel_gain_spread_db: float = 10.0
    """Simulated ESs' uplink gains vary by +/- this many dB around the market's."""

    @property
    def prices_places(self) -> bool:
        """Contracts are designed at a place price: ``price_places`` with exit items under
        the ``deadline`` rule (the learned designers are not trusted there, so every market
        is solved exactly and the exact solve can leave types out)."""
        return self.price_places and self.exclusion and self.selection == "deadline"

    def __post_init__(self) -> None:
        check_flags("incentive", self)
        check_choice("incentive.policy", self.policy, POLICIES)
        check_choice("incentive.selection", self.selection, SELECTION_RULES)
        check_choice("incentive.offer_targeting", self.offer_targeting, OFFER_TARGETINGS)
        for name in ("rounds_per_period", "max_offers_per_round"):
            check_number(f"incentive.{name}", getattr(self, name), 1, integer=True)
        check_number("incentive.latency_price", self.latency_price, 0)
        check_number("incentive.deadline_s", self.deadline_s, 0, ends="()")
        check_number("incentive.repeat_value", self.repeat_value, 0, 1, ends="(]")
        check_number("incentive.flat_fee", self.flat_fee, 0)
        check_number("incentive.flat_fee_f_ghz", self.flat_fee_f_ghz, 0, ends="()")
        check_number("incentive.workload_spread", self.workload_spread, 0, 1, ends="[)")
        check_number("incentive.channel_gain_spread_db", self.channel_gain_spread_db, 0)
