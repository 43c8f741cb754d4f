"""ContractStrategy: every round, per-ES contracts decide who builds agent modules and for what.

One round (``configure_train`` then ``aggregate_train``):

1. In a period-1 round, sample at most ``max_offers_per_round`` connected ESs (seeded) and ask
   those seen for the first time for their public facts (a QUERY: workload and uplink gain).
2. Offer each sampled ES a two-period contract, designed in one batched call of the contract
   policy for their markets (public facts + the cloud's belief about their type). In a period-2
   round, offer the ESs that took a period-1 item the period-2 menu of their report.
3. Each ES picks an item or declines (a QUERY); among those that accept, at most
   ``federation.es_per_round`` are chosen by ``incentive.selection``.
4. The chosen ESs get the global module and train for a number of steps proportional to the
   committed computing resource f (a TRAIN message).
5. Replies are validated (once) and screened; accepted work is paid into the ledger; the
   accepted modules are aggregated, weighted by their work (optimiser steps) or uniformly;
   the round's cloud utility, payments,
   participation, modelled latency (the slowest participant) and wall time are recorded.

Round numbers: Flower counts the rounds of this run from 1; a resumed run continues the
numbering of the run it resumes. :meth:`ContractStrategy.absolute_round` is the one place that
adds the offset; every public method takes Flower's number.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fed_agent.choices import check_choice
from fed_agent.config import ExperimentConfig
from fed_agent.contracts import DynamicContract, Market, value_of_work
from fed_agent.incentives.beliefs import BeliefTracker
from fed_agent.incentives.ledger import Ledger, LedgerEntry
from fed_agent.incentives.policies import ORACLE_POLICIES, Policy
from fed_agent.incentives.profiles import PublicFacts, es_market, period_of_round
from fed_agent.incentives.selection import select_participants
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.aggregation import aggregate
from fed_agent.modules.training import local_steps_for
from fed_agent.outputs import RunOutputs
from fed_agent.protocol import (
    ARRAYS,
    CONFIG,
    DECLINE,
    ITEM,
    METRICS,
    OFFER,
    PHASE,
    PUBLIC_FACTS,
    AdapterState,
    Offer,
    TrainInstruction,
)
from fed_agent.seeding import rng_for
from strategies.checkpoint import save_checkpoint
from strategies.records import adapter_to_record, record_to_adapter
from strategies.sampling import sample_nodes, wait_for_nodes
from strategies.validation import AcceptedReply, RejectedReply, screen_updates, split_replies

log = logging.getLogger(__name__)
WEIGHTINGS = ("work", "uniform")


@dataclass
class _Engagement:
    """An ES's current epoch: its contract, market and period-1 report."""

    contract: DynamicContract
    market: Market
    report: int | None = None


@dataclass(frozen=True)
class _ValidatedReplies:
    """A round's replies after validation: the accepted by node id, and the rejected."""

    accepted: dict[int, AcceptedReply]
    rejected: list[RejectedReply]


@dataclass(frozen=True)
class _Assignment:
    """What a chosen participant committed to this round."""

    item: int
    f_ghz: float
    reward: float
    cloud_value: float
    steps: int
    belief_on_item: float


class ContractStrategy(Strategy):
    """Contract-driven federated construction of agent modules (see the module docstring)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        module: AgentModule,
        outputs: RunOutputs,
        policy: Policy,
        ledger: Ledger,
        *,
        round_offset: int = 0,
        checkpoint_dir: Path | None = None,
        weighting: str = "work",
        saved_state: dict | None = None,
    ) -> None:
        """
        Parameters
        ----------
        round_offset
            Rounds done before this run (a resumed run continues the numbering).
        checkpoint_dir
            Where to checkpoint after every ``federation.checkpoint_every`` rounds (None: the
            strategy never checkpoints; a wrapper that changes the module calls
            :meth:`checkpoint` itself).
        weighting
            ``work``: average the accepted modules weighted by their optimiser steps;
            ``uniform``: with equal weights (the sensitivity central DP assumes).
        saved_state
            A checkpoint's :meth:`state_dict` to continue from.
        """
        check_choice("weighting", weighting, WEIGHTINGS)
        self.cfg = cfg
        self.module = module
        self.outputs = outputs
        self.policy = policy
        self.ledger = ledger
        self.round_offset = round_offset
        self.checkpoint_dir = checkpoint_dir
        self.weighting = weighting
        base_market = Market.from_params(cfg.market)
        self.beliefs = BeliefTracker(base_market.prior, base_market.transition)
        self.facts: dict[int, PublicFacts] = {}
        self.engagements: dict[int, _Engagement] = {}
        self._assignments: dict[int, _Assignment] = {}
        self._global_state: AdapterState = {}
        self._validated: _ValidatedReplies | None = None
        self._round_started = 0.0
        self._period = 1
        if saved_state is not None:
            self.load_state_dict(saved_state)

    def summary(self) -> None:
        """Log the strategy's settings."""
        inc = self.cfg.incentive
        log.info(
            "ContractStrategy: policy %s, <= %d participants, selection %s, aggregation %s (%s)",
            inc.policy,
            self.cfg.federation.es_per_round,
            inc.selection,
            self.cfg.federation.aggregation,
            self.weighting,
        )

    def absolute_round(self, server_round: int) -> int:
        """The run-spanning round number of Flower's ``server_round`` (the one offset)."""
        return server_round + self.round_offset

    def record_round_metrics(self, server_round: int, values: dict[str, float]) -> None:
        """Add values to the metrics row of Flower's ``server_round``."""
        self.outputs.record_round({"round": self.absolute_round(server_round), **values})

    # ------------------------------------------------------------------ configure

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Design offers, collect choices, select participants, send them the module."""
        server_round = self.absolute_round(server_round)
        self._round_started = time.perf_counter()
        self._global_state = record_to_adapter(arrays)
        fed = self.cfg.federation
        node_ids = wait_for_nodes(grid, fed.min_available_es, fed.round_timeout_s)
        _, self._period = period_of_round(server_round, self.cfg.incentive.rounds_per_period)
        offered = self._design_offers(server_round, node_ids, grid)
        choices = self._collect_choices(grid, server_round, offered)
        self._assignments = self._select_participants(server_round, offered, choices)
        return [
            self._train_message(server_round, n, a, arrays) for n, a in self._assignments.items()
        ]

    def _ask_public_facts(self, grid: Grid, node_ids: list[int]) -> None:
        """Ask ESs seen for the first time for their public facts (workload, uplink gain)."""
        new = [n for n in node_ids if n not in self.facts]
        if not new:
            return
        queries = [self._query(n, {PHASE: PUBLIC_FACTS}) for n in new]
        for reply in grid.send_and_receive(queries, timeout=self.cfg.federation.round_timeout_s):
            node_id = int(reply.metadata.src_node_id)
            try:
                if reply.has_error():
                    raise ValueError(reply.error.reason)
                self.facts[node_id] = PublicFacts.from_dict(dict(reply.content[PUBLIC_FACTS]))
            except (KeyError, TypeError, ValueError) as err:
                log.warning(
                    "node %s sent no usable public facts (%s); not offered this round",
                    node_id,
                    err,
                )

    def _design_offers(self, server_round: int, node_ids: list[int], grid: Grid) -> list[int]:
        """The ESs to offer contracts to, their contracts designed.

        Period 1: a fresh seeded sample gets new contracts, designed in one batched call of the
        policy; period 2: the period-1 participants keep theirs. Only sampled ESs are asked for
        their public facts (once each), so a round's cost follows the offers, not the number of
        connected ESs.
        """
        if self._period == 2:
            engaged = {n for n, e in self.engagements.items() if e.report is not None}
            return [n for n in node_ids if n in engaged]
        rng = rng_for(self.cfg.seed, "offers", server_round)
        sampled = sample_nodes(node_ids, self.cfg.incentive.max_offers_per_round, rng)
        self._ask_public_facts(grid, sampled)
        offered = [n for n in sampled if n in self.facts]
        self.beliefs.advance_unobserved([n for n in self.engagements if n not in offered])
        markets = [self._market_of(n, self.beliefs.belief(n)) for n in offered]
        contracts = self.policy(markets) if markets else []
        self.engagements = {
            n: _Engagement(c, m) for n, c, m in zip(offered, contracts, markets, strict=True)
        }
        return offered

    def _market_of(self, node_id: int, belief: np.ndarray) -> Market:
        return es_market(self.cfg.market, self.facts[node_id], self.module.adapter_bytes, belief)

    def _query(self, node_id: int, values: dict) -> Message:
        return Message(
            RecordDict({CONFIG: ConfigRecord(dict(values))}),
            message_type=MessageType.QUERY,
            dst_node_id=node_id,
        )

    def _offer_message(self, server_round: int, node_id: int) -> Message:
        engagement = self.engagements[node_id]
        c = engagement.contract
        report = engagement.report if self._period == 2 else None
        offer = Offer(
            server_round=server_round,
            period=self._period,
            report=DECLINE if report is None else report,
            oracle=self.cfg.incentive.policy in ORACLE_POLICIES,
            f1=tuple(c.f1),
            r1=tuple(c.r1),
            f2=tuple(c.f2.ravel()),
            r2=tuple(c.r2.ravel()),
        )
        return self._query(node_id, {PHASE: OFFER, **offer.to_dict()})

    def _collect_choices(
        self, grid: Grid, server_round: int, offered: list[int]
    ) -> dict[int, int | None]:
        """Each offered ES's chosen item index (None = declined); missing replies are absent."""
        messages = [self._offer_message(server_round, n) for n in offered]
        choices: dict[int, int | None] = {}
        k = self.cfg.market.num_types
        for reply in grid.send_and_receive(messages, timeout=self.cfg.federation.round_timeout_s):
            node_id = int(reply.metadata.src_node_id)
            try:
                item = int(reply.content[METRICS][ITEM])
                if not (item == DECLINE or 0 <= item < k):
                    raise ValueError(f"item {item} outside [0, {k})")
            except (KeyError, TypeError, ValueError) as err:
                reason = reply.error.reason if reply.has_error() else str(err)
                log.warning("node %s: unusable answer to the offer (%s)", node_id, reason)
                continue
            choices[node_id] = None if item == DECLINE else item
        return choices

    def _select_participants(
        self, server_round: int, offered: list[int], choices: dict[int, int | None]
    ) -> dict[int, _Assignment]:
        """Record declines, pick participants among accepters, update beliefs."""
        candidates: dict[int, _Assignment] = {}
        for node_id in offered:
            if node_id not in choices:
                self._ledger_add(server_round, node_id, "no_reply", reason="no answer to the offer")
                self.beliefs.observe_choice(node_id, None)
                continue
            item = choices[node_id]
            belief = self.beliefs.belief(node_id)
            self.beliefs.observe_choice(node_id, item)
            engagement = self.engagements[node_id]
            if item is None:
                self._ledger_add(server_round, node_id, "declined")
                if self._period == 1:
                    del self.engagements[node_id]
                continue
            if self._period == 1:
                engagement.report = item
            f, reward = engagement.contract.terms(self._period, item, engagement.report)
            value = float(value_of_work(f, engagement.market))
            steps = local_steps_for(f, self.cfg.market.f_max_ghz, self.cfg.training.local_steps)
            candidates[node_id] = _Assignment(item, f, reward, value, steps, float(belief[item]))
        ids = list(candidates)
        chosen = select_participants(
            ids,
            [candidates[n].cloud_value - candidates[n].reward for n in ids],
            self.cfg.federation.es_per_round,
            self.cfg.incentive.selection,
            rng_for(self.cfg.seed, "selection", server_round),
        )
        for node_id in ids:
            if node_id not in chosen:
                a = candidates[node_id]
                self._ledger_add(server_round, node_id, "not_selected", a, reason="over the limit")
        return {n: candidates[n] for n in chosen}

    def _train_message(
        self, server_round: int, node_id: int, a: _Assignment, arrays: ArrayRecord
    ) -> Message:
        instruction = TrainInstruction(
            server_round, a.steps, self.module.base.fingerprint, a.f_ghz, a.reward
        )
        content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(instruction.to_dict())})
        return Message(content, message_type=MessageType.TRAIN, dst_node_id=node_id)

    # ------------------------------------------------------------------ aggregate

    def validate_replies(self, replies: list[Message]) -> list[Message]:
        """Validate every train reply (once a round); the valid ones, in order.

        The rejections are kept for this round's ledger. A wrapper that must drop invalid
        replies before it touches them (central DP clips them) calls this first; otherwise
        :meth:`aggregate_train` does.
        """
        accepted, rejected = split_replies(replies, self.module, self.cfg.data.samples_per_es)
        self._validated = _ValidatedReplies({r.node_id: r for r in accepted}, rejected)
        return [m for m in replies if int(m.metadata.src_node_id) in self._validated.accepted]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, pay and aggregate the valid replies; record the round; checkpoint."""
        replies = list(replies)
        if self._validated is None:
            self.validate_replies(replies)
        validated, self._validated = self._validated, None
        merged, metrics = self._aggregate(self.absolute_round(server_round), replies, validated)
        if self.checkpoint_dir is not None:
            self.checkpoint(server_round, self.checkpoint_dir, merged)
        return (None if merged is None else adapter_to_record(merged)), metrics

    def checkpoint(self, server_round: int, root: Path, adapter: AdapterState | None) -> None:
        """Checkpoint the cloud after Flower's ``server_round`` if it is a checkpoint round.

        ``adapter`` is the module after the round (None: unchanged, the one the round sent).
        """
        server_round = self.absolute_round(server_round)
        if server_round % self.cfg.federation.checkpoint_every == 0:
            state = self._global_state if adapter is None else adapter
            save_checkpoint(root, server_round, state, self.state_dict(), self.ledger.path)

    def _aggregate(
        self, server_round: int, replies: list[Message], validated: _ValidatedReplies
    ) -> tuple[AdapterState | None, MetricRecord]:
        # the adapters are read from the replies given: a DP wrapper has clipped them since
        accepted = [
            dataclasses.replace(
                validated.accepted[node_id], adapter=record_to_adapter(m.content[ARRAYS])
            )
            for m in replies
            if (node_id := int(m.metadata.src_node_id)) in validated.accepted
        ]
        accepted, lying = self._check_claimed_work(accepted)
        effort = {n: float(a.steps) for n, a in self._assignments.items()}
        kept, screened = screen_updates(self._global_state, accepted, effort=effort)
        for outcome in [*validated.rejected, *lying, *screened]:
            a = self._assignments.get(outcome.node_id)
            self._ledger_add(server_round, outcome.node_id, "rejected", a, reason=outcome.reason)
        answered = {int(m.metadata.src_node_id) for m in replies}
        answered |= {r.node_id for r in validated.rejected}
        for node_id, a in self._assignments.items():
            if node_id not in answered:
                self._ledger_add(server_round, node_id, "no_reply", a, reason="no train reply")
        for reply in kept:
            self._pay(server_round, reply)
        row = self._round_row(server_round, len(replies))
        self.outputs.record_round(row)
        self.ledger.write()
        if not kept:
            log.warning("round %d: no usable module; the global module is unchanged", server_round)
            return None, MetricRecord({"participants": 0})
        states = [r.adapter for r in kept]
        uniform = self.weighting == "uniform"
        weights = [1.0 if uniform else r.metrics.train_steps for r in kept]
        merged = aggregate(self.cfg.federation.aggregation, states, weights)
        return merged, MetricRecord(
            {"participants": len(kept), "cloud-utility": row["cloud_utility"]}
        )

    def _check_claimed_work(
        self, accepted: list[AcceptedReply]
    ) -> tuple[list[AcceptedReply], list[RejectedReply]]:
        """An ES is paid for the work it was asked for: a reply claiming other work is refused."""
        honest, lying = [], []
        for reply in accepted:
            a = self._assignments.get(reply.node_id)
            if a is None:
                lying.append(RejectedReply(reply.node_id, "reply from an ES that was not chosen"))
            elif reply.metrics.train_steps != a.steps:
                claim = f"reported {reply.metrics.train_steps} steps, asked {a.steps}"
                lying.append(RejectedReply(reply.node_id, claim))
            else:
                honest.append(reply)
        return honest, lying

    def _pay(self, server_round: int, reply: AcceptedReply) -> None:
        a = self._assignments[reply.node_id]
        m = reply.metrics
        self._ledger_add(
            server_round,
            reply.node_id,
            "paid",
            a,
            paid=a.reward,
            es_utility=m.es_utility,
            modelled_latency_s=m.modelled_latency_s,
            wall_s=m.train_wall_s,
        )

    def _ledger_add(
        self,
        server_round: int,
        node_id: int,
        status: str,
        a: _Assignment | None = None,
        reason: str = "",
        **paid_fields: float,
    ) -> None:
        entry = LedgerEntry(server_round, self._period, node_id, status, reason=reason)
        if a is not None:
            entry.item, entry.f_ghz, entry.reward_offered = a.item, a.f_ghz, a.reward
            entry.cloud_value = a.cloud_value
            entry.belief_on_revealed_type = a.belief_on_item
        for key, value in paid_fields.items():
            setattr(entry, key, value)
        self.ledger.add(entry)

    def _round_row(self, server_round: int, num_replies: int) -> dict:
        adapter_bytes = self.module.adapter_bytes
        return {
            "round": server_round,
            "period": self._period,
            **self.ledger.round_summary(server_round),
            "bytes_down": len(self._assignments) * adapter_bytes,
            "bytes_up": num_replies * adapter_bytes,
            "round_wall_s": time.perf_counter() - self._round_started,
        }

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Beliefs, public facts and current contracts, by node id (JSON-ready)."""
        engagements = {
            str(n): {
                "f1": e.contract.f1.tolist(),
                "r1": e.contract.r1.tolist(),
                "f2": e.contract.f2.tolist(),
                "r2": e.contract.r2.tolist(),
                "prior": e.market.prior.tolist(),
                "report": e.report,
            }
            for n, e in self.engagements.items()
        }
        return {
            "beliefs": {str(k): v for k, v in self.beliefs.state().items()},
            "facts": {str(n): p.to_dict() for n, p in self.facts.items()},
            "engagements": engagements,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (node ids that do not reconnect are simply not used)."""
        self.beliefs.load_state(state["beliefs"])
        self.facts = {int(n): PublicFacts.from_dict(p) for n, p in state["facts"].items()}
        self.engagements = {}
        for n, e in state["engagements"].items():
            market = self._market_of(int(n), np.asarray(e["prior"]))
            contract = DynamicContract(e["f1"], e["r1"], e["f2"], e["r2"])
            self.engagements[int(n)] = _Engagement(contract, market, e["report"])

    # ------------------------------------------------------------------ evaluate

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """No federated evaluation: quality is measured on the cloud's held-out split."""
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Nothing to aggregate (see configure_evaluate)."""
        return None
