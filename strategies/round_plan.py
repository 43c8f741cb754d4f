"""What one round of the ContractStrategy decided: the one object that carries a round.

``configure_train`` creates a :class:`RoundPlan` (the round, its period, the module sent, the
offers and the participants' assignments) and ``aggregate_train`` consumes it. The plan is
frozen: a later step of the round (the choices read from train-offer replies, the validated
replies) makes a new plan with :func:`dataclasses.replace`, so what a round decided is never
changed behind the back of a step that already read it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from fed_agent.incentives.profiles import period_of_round
from fed_agent.protocol import AdapterState
from strategies.validation import AcceptedReply, RejectedReply


@dataclass(frozen=True)
class Assignment:
    """What a chosen participant committed to this round."""

    item: int
    f_ghz: float
    reward: float
    cloud_value: float
    steps: int
    belief_on_item: float
    modelled_latency_s: float
    """The cloud's own W / f + S / r of this ES (public facts and the contracted f)."""
    es_utility_est: float
    """The cloud's estimate of the ES's utility: R - c(f) / theta of the type the item is
    designed for (a function of the choice, never of a figure the ES reports)."""
    nonce: int = 0
    """The TRAIN instruction's nonce; the reply must echo it."""
    chosen_because: str = ""
    """Why selection chose this ES (the ledger's reason for its work)."""
    owed: float = 0.0
    """The part of ``reward`` that is deferred period-1 pay (ex ante, period 2, or the
    earlier period-1 rounds' in a period-1 round that ends the run): owed for the period-1
    work whether or not this round's work is chosen, so no cost of choosing it."""
    deferred_cost: float = 0.0
    """Period 1 with deferred pay: the pay this round's work will be owed in period 2
    (``R_i / delta`` per period-1 round), in the contract's period-1 terms (``R_i``): a cost
    of choosing the ES that ``reward`` (0, deferred) does not show."""

    @property
    def cost_of_choosing(self) -> float:
        """What choosing this ES costs the cloud: its reward, less deferred pay it is owed
        anyway (``owed``), plus the pay this work defers (``deferred_cost``)."""
        return self.reward - self.owed + self.deferred_cost


@dataclass(frozen=True)
class ValidatedReplies:
    """A round's replies after validation: the accepted by node id, the rejected (one per
    chosen ES at most, recorded in the ledger) and the ignored (duplicates and unsolicited
    replies: logged only)."""

    accepted: Mapping[int, AcceptedReply]
    rejected: tuple[RejectedReply, ...]
    ignored: tuple[RejectedReply, ...]


@dataclass(frozen=True)
class RoundPlan:
    """One round: made by ``configure_train``, read by every later step of the round."""

    server_round: int
    """The absolute round (what TRAIN replies must echo)."""
    period: int
    """The round's period of the contracts' epoch (1 or 2)."""
    global_state: AdapterState
    """The module the round sends."""
    started: float = field(default_factory=time.perf_counter)
    design_times: Mapping[str, float] = field(
        default_factory=lambda: {"design_s": 0.0, "guard_s": 0.0}
    )
    """Seconds the contract policy and its guard took this round."""
    assignments: Mapping[int, Assignment] = field(default_factory=dict)
    """The chosen participants (empty until a train offer's replies name their items)."""
    train_offers: Mapping[int, int] = field(default_factory=dict)
    """Offers sent with the module (node id -> nonce), until their replies are read."""
    offered_steps: tuple[int, ...] = ()
    """The steps of every item offered with the module (folded offers)."""
    deadline_s: float = 0.0
    """The round's deadline chosen with its participants (see incentives.selection)."""
    validated: ValidatedReplies | None = None
    """The replies after validation (None until validated)."""
    round_in_period: int = 0
    """The round's place in its period (0: the period's first round)."""
    closes_epoch: bool = False
    """Whether held pay is settled this round: the last round of period 2, or the run's last
    round (no period 2 follows it)."""

    @classmethod
    def begin(
        cls,
        server_round: int,
        global_state: AdapterState,
        rounds_per_period: int,
        num_rounds: int,
    ) -> RoundPlan:
        """The plan of absolute round ``server_round``: its period and place in the epoch."""
        _, period = period_of_round(server_round, rounds_per_period)
        in_period = (server_round - 1) % rounds_per_period
        closes = (period == 2 and in_period == rounds_per_period - 1) or (
            server_round >= num_rounds
        )
        return cls(
            server_round, period, global_state, round_in_period=in_period, closes_epoch=closes
        )

    @property
    def opens_epoch(self) -> bool:
        """The epoch's first round: new contracts are designed and offered."""
        return self.period == 1 and self.round_in_period == 0
