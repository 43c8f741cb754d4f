"""The contract book: each ES's engagement, the pay held in escrow for it, and the ledger rows.

An engagement is an ES's current epoch: its two-period contract, the market it was designed
on, its period-1 report and, when the federation holds pay
(:func:`fed_agent.contracts.escrow.holds_pay`: ex ante, delta > 0), the period-1 pay held back
until its period-2 work is delivered. What is held is what the contract pays in period 1: a
contract in its deferred form (:func:`fed_agent.contracts.escrow.defer_pay`, every guarded
offer) pays 0 there, and its deferred pay is part of the period-2 items instead. An epoch
the run cannot finish is offered per period (``strategies.recruiter``); where a run ends in
period 1 all the same (a resume with fewer rounds), its last round pays the deferred pay of
the epoch's period-1 work (:meth:`ContractBook.due_at_close`), as it releases held pay.

Escrow over an epoch of several rounds a period: the held pay of every period-1 round adds up;
it is released once, in the epoch's closing round (the last round of period 2, or the run's
last round), to an ES that delivered or was ready to; it is forfeited as soon as the ES fails
its commitment (declines, does not answer, sends rejected work) in any later round of the
epoch, and when the epoch closes without it (gone).

The book is the one writer of ledger rows; every row names the round and period of the
:class:`~strategies.round_plan.RoundPlan` it belongs to. It calls nothing above it
(recruiting, judging replies, the strategy).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fed_agent.config import ExperimentConfig
from fed_agent.contracts import DynamicContract, Market
from fed_agent.contracts.escrow import holds_pay
from fed_agent.contracts.solvers.references import excluded_items
from fed_agent.incentives.ledger import Ledger, LedgerEntry
from strategies.round_plan import Assignment, RoundPlan
from strategies.validation import AcceptedReply

log = logging.getLogger(__name__)


@dataclass
class Engagement:
    """An ES's current epoch: its contract, where it came from, market, period-1 report,
    and the period-1 pay held back until its period-2 work is delivered (ex ante)."""

    contract: DynamicContract
    market: Market
    source: str
    report: int | None = None
    held: float = 0.0
    deferred: np.ndarray | None = None
    """(K,) period-1 pay deferred into every period-2 item after each report (the guard's
    ``GuardedOffers.deferred``); None: nothing deferred."""
    worked: int = 0
    """Period-1 rounds of this epoch whose work was paid: the deferred pay is owed for them."""


class ContractBook:
    """Engagements by node id, their escrow, and the ledger rows of every round."""

    def __init__(self, cfg: ExperimentConfig, ledger: Ledger) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.engagements: dict[int, Engagement] = {}
        self.trained: Counter[int] = Counter(
            e.node_id for e in ledger.entries if e.status == "paid"
        )
        """Rounds each ES's work was paid in, this run's and those of the runs it resumes, by
        its current node id (it moves with the ES to a new node id, :meth:`rebind`)."""

    def record(
        self,
        plan: RoundPlan,
        node_id: int,
        status: str,
        a: Assignment | None = None,
        reason: str = "",
        source: str | None = None,
        **paid_fields: float | int,
    ) -> None:
        """Add ``node_id``'s ledger row of the plan's round (its assignment's terms, if any)."""
        reason = reason or (a.chosen_because if a is not None else "")
        entry = LedgerEntry(plan.server_round, plan.period, node_id, status, reason=reason)
        engagement = self.engagements.get(node_id)
        entry.offer_source = source or (engagement.source if engagement else "")
        entry.excluded_types = excluded_items(engagement.contract) if engagement else ""
        if a is not None:
            entry.item, entry.f_ghz, entry.reward_offered = a.item, a.f_ghz, a.reward
            entry.cloud_value = a.cloud_value
            entry.belief_on_revealed_type = a.belief_on_item
        for key, value in paid_fields.items():
            setattr(entry, key, value)
        self.ledger.add(entry)

    def deferred_split(self, plan: RoundPlan, node_id: int) -> tuple[float, float]:
        """(owed, unearned): the deferred period-1 pay in this period-2 round's rewards of
        ``node_id``, split by the share of period-1 rounds it worked. The owed part is paid
        whatever it does in period 2 as long as it keeps its commitment; the unearned part
        (period-1 work it never did: not chosen, or refused) is taken off its rewards."""
        engagement = self.engagements.get(node_id)
        if plan.period != 2 or engagement is None or engagement.deferred is None:
            return 0.0, 0.0
        full = float(engagement.deferred[engagement.report])
        share = min(1.0, engagement.worked / self.cfg.incentive.rounds_per_period)
        return full * share, full * (1.0 - share)

    def due_at_close(self, plan: RoundPlan, node_id: int) -> tuple[float, float]:
        """(owed, this round's): the deferred pay due in a period-1 round that closes the
        epoch (the run's last round: no period 2 follows to pay it). What the period-1 rounds
        it worked before are owed is paid as long as it keeps its commitment; this round's
        share is paid with this round's work, by what that work earns. (0, 0) in any other
        round or without deferral."""
        engagement = self.engagements.get(node_id)
        if (
            plan.period != 1
            or not plan.closes_epoch
            or engagement is None
            or engagement.deferred is None
            or engagement.report is None
        ):
            return 0.0, 0.0
        full = float(engagement.deferred[engagement.report])
        rounds = self.cfg.incentive.rounds_per_period
        return full * min(1.0, engagement.worked / rounds), full / rounds

    def deferred_cost(self, plan: RoundPlan, node_id: int, item: int) -> float:
        """What choosing ``node_id`` for ``item`` in this period-1 round costs in deferred pay:
        the round's share of ``R_i / delta`` it will be owed in period 2, in the contract's
        period-1 terms (times delta: ``R_i`` per period). 0 in period 2, in a round that
        closes the epoch (its share is in the round's reward, :meth:`due_at_close`) or without
        deferral."""
        engagement = self.engagements.get(node_id)
        if (
            plan.period != 1
            or plan.closes_epoch
            or engagement is None
            or engagement.deferred is None
        ):
            return 0.0
        share = engagement.market.discount / self.cfg.incentive.rounds_per_period
        return share * float(engagement.deferred[item])

    def settle_held(self, plan: RoundPlan, node_id: int, delivered: bool) -> dict[str, float]:
        """Ledger fields that settle an ES's held pay: a failed commitment forfeits it in any
        round; kept commitments are paid it once, in the epoch's closing round."""
        engagement = self.engagements.get(node_id)
        if engagement is None or engagement.held == 0 or (delivered and not plan.closes_epoch):
            return {}
        held, engagement.held = engagement.held, 0.0
        return {"paid": held, "released": held} if delivered else {"forfeited": held}

    def holds_back(self, plan: RoundPlan, node_id: int) -> bool:
        """Period-1 pay waits for the period-2 work where the federation holds pay (unless
        the round closes the epoch: the run's last round)."""
        engagement = self.engagements.get(node_id)
        return (
            plan.period == 1
            and engagement is not None
            and holds_pay(engagement.market)
            and not plan.closes_epoch
        )

    def forfeit_unfinished(self, plan: RoundPlan) -> None:
        """Held pay of an epoch whose period-2 work never came is the cloud's (ex ante)."""
        for node_id, engagement in self.engagements.items():
            if engagement.held > 0:
                reason = "gone before the epoch's end: held period-1 pay forfeited"
                self.record(plan, node_id, "forfeit", reason=reason, forfeited=engagement.held)
                engagement.held = 0.0

    def pay(self, plan: RoundPlan, reply: AcceptedReply, fraction: float = 1.0) -> None:
        """Pay accepted work, ``fraction`` of the offered reward (what screening's settlement
        says the work earned): now, or (period 1, pay held) added to the held pay."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"a pay fraction must be in [0, 1], got {fraction}")
        a = plan.assignments[reply.node_id]
        self.trained[reply.node_id] += 1
        if plan.period == 1 and reply.node_id in self.engagements:
            self.engagements[reply.node_id].worked += 1
        # deferred pay is owed for period-1 work, whatever this round's work earns
        earned = a.owed + (a.reward - a.owed) * fraction
        if self.holds_back(plan, reply.node_id):
            self.engagements[reply.node_id].held += earned
            pay = {"paid": 0.0, "held": earned}
        else:
            released = self.settle_held(plan, reply.node_id, delivered=True).get("released", 0.0)
            pay = {"paid": earned + released, "released": released}
        pay["pay_fraction"] = fraction
        self.record(
            plan,
            reply.node_id,
            "paid",
            a,
            **pay,
            es_utility=a.es_utility_est,
            modelled_latency_s=a.modelled_latency_s,
            wall_s=reply.metrics.train_wall_s,
        )

    def exclude(self, plan: RoundPlan, node_id: int, item: int, belief: np.ndarray) -> None:
        """An ES that took the exit item: no work, no pay for work; it is paid what the item
        carries (ex ante, period 2 or a run's last round in period 1: the deferred pay of its
        period-1 work, owed because that work was done) and, having kept its commitment, any
        held pay at the epoch's close."""
        engagement = self.engagements[node_id]
        report = engagement.report if plan.period == 2 else None
        _, reward = engagement.contract.terms(plan.period, item, report)
        owed_at_close = self.due_at_close(plan, node_id)[0]  # a run ending in period 1
        reward += owed_at_close - self.deferred_split(plan, node_id)[1]
        if self.holds_back(plan, node_id):
            engagement.held += reward
            pay = {"paid": 0.0, "held": reward}
        else:
            released = self.settle_held(plan, node_id, delivered=True).get("released", 0.0)
            pay = {"paid": reward + released, "released": released}
        reason = "exit item: excluded, no work this round"
        if (plan.period == 2 or owed_at_close > 0) and reward > 0:
            reason += f"; paid {reward:.6g}, the deferred pay of its period-1 work"
        terms = {
            "item": item,
            "reward_offered": reward,
            "belief_on_revealed_type": float(belief[item]),
        }
        self.record(plan, node_id, "excluded", reason=reason, **pay, **terms)

    def pass_over(self, plan: RoundPlan, node_id: int, a: Assignment, reason: str) -> None:
        """An ES that kept its commitment but was not chosen: it is paid what it is owed for
        earlier work (deferred period-1 pay in period 2; held pay at the epoch's close)."""
        settled = self.settle_held(plan, node_id, delivered=True)
        released = settled.get("released", 0.0)
        pay = {"paid": a.owed + released, "released": released} if a.owed else settled
        if a.owed:
            reason += f"; paid {a.owed:.6g}, the deferred pay of its period-1 work"
        self.record(
            plan, node_id, "not_selected", a, reason, modelled_latency_s=a.modelled_latency_s, **pay
        )

    def refuse(self, plan: RoundPlan, node_id: int, status: str, reason: str) -> None:
        """A chosen ES's work that is not paid (rejected, or no reply): its held pay is lost."""
        a = plan.assignments.get(node_id)
        settled = self.settle_held(plan, node_id, delivered=False) if a else {}
        self.record(plan, node_id, status, a, reason=reason, **settled)

    def rebind(self, old: int, new: int) -> None:
        """Move ``old``'s engagement (contract, report, held pay) and its rounds of paid work
        to node id ``new``."""
        if old in self.engagements:
            self.engagements[new] = self.engagements.pop(old)
        if old in self.trained:
            self.trained[new] = self.trained.pop(old)

    def state_dict(self) -> dict:
        """The engagements by node id (JSON-ready)."""
        return {
            str(n): {
                "f1": e.contract.f1.tolist(),
                "r1": e.contract.r1.tolist(),
                "f2": e.contract.f2.tolist(),
                "r2": e.contract.r2.tolist(),
                "prior": e.market.prior.tolist(),
                "report": e.report,
                "source": e.source,
                "held": e.held,
                "deferred": None if e.deferred is None else e.deferred.tolist(),
                "worked": e.worked,
            }
            for n, e in self.engagements.items()
        }

    def load_state_dict(
        self, state: dict, market_of: Callable[[int, np.ndarray], Market | None]
    ) -> None:
        """Restore :meth:`state_dict`; ``market_of(node, prior)`` rebuilds each market."""
        self.engagements = {}
        for n, e in state.items():
            market = market_of(int(n), np.asarray(e["prior"]))
            if market is None:  # the resumed config checks match the checkpoint's: not reached
                raise ValueError(f"node {n}'s contract cannot meet the configured deadline")
            contract = DynamicContract(e["f1"], e["r1"], e["f2"], e["r2"])
            deferred = e.get("deferred")  # absent: a checkpoint of contracts paid undeferred
            self.engagements[int(n)] = Engagement(
                contract,
                market,
                e["source"],
                e["report"],
                float(e["held"]),
                None if deferred is None else np.asarray(deferred, float),
                int(e.get("worked", 0)),
            )
