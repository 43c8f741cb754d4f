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

   When every ES that accepts will be chosen (no more offers than ``es_per_round`` and a
   selection rule that keeps every accepter under the limit, :data:`FOLDING_SELECTIONS`),
   steps 3 and 4 are one TRAIN message per ES (``protocol.TrainOffer``): the ES picks its item
   and trains that item's steps at once, or declines with a reply without arrays. The cloud
   then learns the choices from the replies and records them exactly as in step 3, so the
   guarantees stay: the type stays private, and an ES is paid only for the item its reply
   names and the work asked for that item. In a deployment each message is a fresh ClientApp
   process, so this halves a round's process starts.

A node that answers the public-facts query with an error of its ClientApp (e.g. a stock
Flower app without a query handler) cannot take part in the contract protocol: it is recorded
once as ``incompatible`` in the ledger, with a one-line reason, counted in the round metrics
(``incompatible_es``), and never profiled, offered or paid again in this run.
5. Replies are validated (once) and judged against the cloud's own expectations (its
   reference update on its own small split, the norm per unit of contracted effort seen in
   earlier rounds, copies of another reply or of the last global step:
   ``fed_agent.screening.judge``), so that a round of one or two ESs is judged too; the
   accepted modules, clipped to their expected norm, are aggregated, weighted
   by their work (optimiser steps) or uniformly, and only the work actually aggregated is
   paid into the ledger; the round's cloud utility, payments, participation, modelled
   latency (the slowest participant, computed by the cloud) and wall time are recorded.

One reply per chosen ES per round: a reply must echo the round and the nonce of its TRAIN
instruction (else it is a replay and rejected), a second reply from the same node is a
duplicate, and a reply from an ES that was not asked to train is unsolicited. Duplicates and
unsolicited replies are logged and ignored: unpaid, and absent from the ledger and the
participation figures (the round row counts them as ``ignored_replies``). Nothing a reply
holds can end the round: a reply that fails to decode, or whose module cannot be aggregated,
is rejected alone. Self-reported figures are typed and bounded by the protocol; the ledger's
latency and ES utility are the cloud's own figures (see docs/strategy.md).

Round numbers: Flower counts the rounds of this run from 1; a resumed run continues the
numbering of the run it resumes. :meth:`ContractStrategy.absolute_round` is the one place that
adds the offset; every public method takes Flower's number.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
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
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fed_agent import latency
from fed_agent.checkpoints import resume_fields, save_checkpoint
from fed_agent.choices import check_choice
from fed_agent.config import ExperimentConfig
from fed_agent.contracts import DynamicContract, Market, value_of_work
from fed_agent.contracts.utility import es_period_utility
from fed_agent.incentives.beliefs import BeliefTracker
from fed_agent.incentives.ledger import Ledger, LedgerEntry
from fed_agent.incentives.policies import ORACLE_POLICIES, UNCOMMITTED_POLICIES, ContractPolicy
from fed_agent.incentives.profiles import (
    PublicFacts,
    deadline_market,
    es_market,
    period_of_round,
    period_weight,
)
from fed_agent.incentives.selection import Candidate, select_participants, selection_surplus
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.training import learning_effort, local_steps_for
from fed_agent.outputs import RunOutputs
from fed_agent.protocol import (
    ARRAYS,
    CONFIG,
    DECLINE,
    ITEM,
    METRICS,
    PHASE,
    PUBLIC_FACTS,
    AdapterState,
    Offer,
    ProtocolError,
    TrainInstruction,
    TrainOffer,
    TrainReply,
    new_nonce,
)
from fed_agent.screening.aggregation import aggregate, server_step
from fed_agent.screening.judge import UpdateScreen
from fed_agent.screening.robust import flatten
from fed_agent.seeding import rng_for
from strategies.records import adapter_to_record, record_to_adapter
from strategies.reference_job import ReferenceJob
from strategies.sampling import sample_nodes, wait_for_nodes
from strategies.validation import (
    AcceptedReply,
    RejectedReply,
    clip_to_expected,
    decode_adapter,
    judge_updates,
    split_replies,
)

log = logging.getLogger(__name__)
WEIGHTINGS = ("work", "uniform")
FOLDING_SELECTIONS = ("surplus", "random")
"""Selection rules that choose every accepting ES when there are at most ``es_per_round``
of them (``fed_agent.incentives.selection``), so the offer can ride on the TRAIN message."""
INCOMPATIBLE_ERRORS = (ErrorCode.LOAD_CLIENT_APP_EXCEPTION, ErrorCode.CLIENT_APP_RAISED_EXCEPTION)
"""Error replies that say the node's ClientApp cannot answer the protocol (not a transient
fault such as a dead node or a timed-out reply, which is asked again later)."""


def one_line(text: str, limit: int = 200) -> str:
    """The last non-empty line of ``text`` (an exception's message), at most ``limit`` chars."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[-1] if lines else "no reason given"
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass
class _Engagement:
    """An ES's current epoch: its contract, where it came from, market, period-1 report,
    and the period-1 pay held back until its period-2 work is delivered (ex ante)."""

    contract: DynamicContract
    market: Market
    source: str
    report: int | None = None
    held: float = 0.0


@dataclass(frozen=True)
class _ValidatedReplies:
    """A round's replies after validation: the accepted by node id, the rejected (one per
    chosen ES at most, recorded in the ledger) and the ignored (duplicates and unsolicited
    replies: logged only)."""

    accepted: dict[int, AcceptedReply]
    rejected: list[RejectedReply]
    ignored: list[RejectedReply]


@dataclass(frozen=True)
class _Assignment:
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


class ContractStrategy(Strategy):
    """Contract-driven federated construction of agent modules (see the module docstring)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        module: AgentModule,
        outputs: RunOutputs,
        policy: ContractPolicy,
        ledger: Ledger,
        *,
        round_offset: int = 0,
        checkpoint_dir: Path | None = None,
        weighting: str = "work",
        saved_state: dict | None = None,
        commits: bool = True,
    ) -> None:
        """
        Parameters
        ----------
        round_offset
            Rounds done before this run (a resumed run continues the numbering).
        checkpoint_dir
            Where to checkpoint after every ``federation.checkpoint_every`` rounds and after
            the last (None: the strategy never checkpoints).
        weighting
            ``work``: average the accepted modules weighted by their optimiser steps;
            ``uniform``: with equal weights (the sensitivity central DP assumes).
        saved_state
            A checkpoint's :meth:`state_dict` to continue from.
        commits
            Whether :meth:`aggregate_train` commits the round (:meth:`commit_round`); False
            for a wrapper that changes the module after it and commits the round itself.
        """
        check_choice("weighting", weighting, WEIGHTINGS)
        self.cfg = cfg
        self.module = module
        self.outputs = outputs
        self.policy = policy
        self.ledger = ledger
        self.round_offset = round_offset
        self.checkpoint_dir = checkpoint_dir
        self.commits = commits
        self.weighting = weighting
        base_market = Market.from_params(cfg.market)
        self.beliefs = BeliefTracker(base_market.prior, base_market.transition)
        self.facts: dict[int, PublicFacts] = {}
        self.incompatible: dict[int, str] = {}
        """Nodes whose ClientApp cannot answer the protocol, and why (never asked again)."""
        self._train_offers: dict[int, int] = {}
        """This round's offers sent with the module (node id -> nonce), until settled."""
        self.engagements: dict[int, _Engagement] = {}
        self._assignments: dict[int, _Assignment] = {}
        self._global_state: AdapterState = {}
        self._validated: _ValidatedReplies | None = None
        self._round = 0
        """The absolute round being configured / aggregated (what TRAIN replies must echo)."""
        self._round_started = 0.0
        self._design_times = {"design_s": 0.0, "guard_s": 0.0}
        self._period = 1
        self.expectations = UpdateScreen(cfg.screening)
        """What the cloud expects of an honest update (calibrated round by round)."""
        self._offered_steps: list[int] = []
        """The steps of every item offered with the module this round (folded offers)."""
        self._references = ReferenceJob(cfg, module)
        """The round's reference update, trained while the ESs train."""
        self._last_step: np.ndarray | None = None
        """The previous round's change of the global module (flattened; None at first)."""
        self._deadline_s = 0.0
        """The round's deadline chosen with its participants (see incentives.selection)."""
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
        self._round = server_round
        self._validated = None
        self._round_started = time.perf_counter()
        self._global_state = record_to_adapter(arrays)
        fed = self.cfg.federation
        node_ids = wait_for_nodes(grid, fed.min_available_es, fed.round_timeout_s)
        _, self._period = period_of_round(server_round, self.cfg.incentive.rounds_per_period)
        self._design_times = {"design_s": 0.0, "guard_s": 0.0}
        self._train_offers = {}
        self._offered_steps = []
        offered = self._design_offers(server_round, node_ids, grid)
        if self._folds_offers(offered):
            self._assignments = {}
            messages = [self._train_offer_message(server_round, n, arrays) for n in offered]
        else:
            choices = self._collect_choices(grid, server_round, offered)
            self._assignments = self._select_participants(server_round, offered, choices)
            messages = [
                self._train_message(server_round, n, a, arrays)
                for n, a in self._assignments.items()
            ]
        if messages:
            planned = [a.steps for a in self._assignments.values()] or self._offered_steps
            self._references.start(server_round, self._global_state, planned)
        return messages

    def _folds_offers(self, offered: list[int]) -> bool:
        """Whether every ES that accepts will be chosen (then offer and TRAIN are one)."""
        return (
            self.cfg.federation.fold_offers
            and bool(offered)
            and len(offered) <= self.cfg.federation.es_per_round
            and self.cfg.incentive.selection in FOLDING_SELECTIONS
        )

    def _train_offer_message(self, server_round: int, node_id: int, arrays: ArrayRecord) -> Message:
        offer = self._offer(server_round, node_id)
        steps = tuple(
            local_steps_for(
                offer.terms(item)[0], self.cfg.market.f_max_ghz, self.cfg.training.local_steps
            )
            for item in range(offer.num_items)
        )
        nonce = new_nonce()
        self._train_offers[node_id] = nonce
        self._offered_steps.extend(steps)
        train_offer = TrainOffer(offer, steps, self.module.base.fingerprint, nonce)
        content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(train_offer.to_dict())})
        return Message(content, message_type=MessageType.TRAIN, dst_node_id=node_id)

    def _settle_train_offers(self, replies: list[Message]) -> list[Message]:
        """Read this round's choices from the replies to its train offers (once), record them
        as step 3 does, and return the replies without the declines."""
        if not self._train_offers:
            return replies
        offered, self._train_offers = self._train_offers, {}
        choices: dict[int, int | None] = {}
        k = self.cfg.market.num_types
        declines: set[int] = set()
        for reply in replies:
            node_id = int(reply.metadata.src_node_id)
            if node_id not in offered or node_id in choices:
                continue  # unsolicited or duplicate: validation ignores it
            try:
                if reply.has_error():
                    raise ProtocolError(one_line(reply.error.reason))
                item = TrainReply.from_dict(dict(reply.content[METRICS])).item
                if not (item == DECLINE or 0 <= item < k):
                    raise ProtocolError(f"item {item} outside [0, {k})")
            except (KeyError, TypeError, ValueError) as err:
                log.warning("node %s: unusable answer to the train offer (%s)", node_id, err)
                continue
            choices[node_id] = None if item == DECLINE else item
            if item == DECLINE:
                declines.add(node_id)
        self._assignments = self._select_participants(
            self._round, list(offered), choices, nonces=offered
        )
        return [r for r in replies if int(r.metadata.src_node_id) not in declines]

    def _ask_public_facts(self, grid: Grid, node_ids: list[int]) -> None:
        """Ask ESs seen for the first time for their public facts (workload, uplink gain)."""
        new = [n for n in node_ids if n not in self.facts and n not in self.incompatible]
        if not new:
            return
        queries = [self._query(n, {PHASE: PUBLIC_FACTS}) for n in new]
        for reply in grid.send_and_receive(queries, timeout=self.cfg.federation.round_timeout_s):
            node_id = int(reply.metadata.src_node_id)
            if node_id not in new or node_id in self.facts or node_id in self.incompatible:
                continue
            if reply.has_error() and reply.error.code not in INCOMPATIBLE_ERRORS:
                log.warning(
                    "node %s sent no public facts (%s); asked again in a later round",
                    node_id,
                    one_line(reply.error.reason),
                )
                continue
            try:
                if reply.has_error():
                    raise ValueError(reply.error.reason)
                self.facts[node_id] = PublicFacts.from_dict(dict(reply.content[PUBLIC_FACTS]))
            except (KeyError, TypeError, ValueError) as err:
                reason = f"cannot answer the contract protocol: {one_line(str(err))}"
                self._mark_incompatible(node_id, reason)

    def _mark_incompatible(self, node_id: int, reason: str) -> None:
        """Record once that a node cannot take part (a ledger row; never asked again)."""
        reason = one_line(reason)
        self.incompatible[node_id] = reason
        log.warning(
            "node %s is incompatible and will not be offered contracts: %s", node_id, reason
        )
        self._ledger_add(self._round, node_id, "incompatible", reason=reason)

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
        usable = [n for n in node_ids if n not in self.incompatible]
        sampled = sample_nodes(usable, self.cfg.incentive.max_offers_per_round, rng)
        self._ask_public_facts(grid, sampled)
        offered = [n for n in sampled if n in self.facts]
        self.beliefs.advance_unobserved([n for n in self.engagements if n not in offered])
        designed = {n: self._market_of(n, self.beliefs.belief(n)) for n in offered}
        self._forfeit_unfinished_epochs(server_round)
        self.engagements = {}
        for node_id in [n for n, m in designed.items() if m is None]:
            reason = (
                f"cannot meet the round's deadline of {self.cfg.incentive.deadline_s:g} s "
                f"even at f_max = {self.cfg.market.f_max_ghz:g} GHz"
            )
            self._ledger_add(server_round, node_id, "no_offer", reason=reason, source="no_offer")
        offered = [n for n in offered if designed[n] is not None]
        markets = [designed[n] for n in offered]
        if self.cfg.incentive.policy in UNCOMMITTED_POLICIES:
            markets = [m.replace(participation="per_period") for m in markets]
        if not markets:
            return []
        offers = self.policy(markets)
        self._design_times = {"design_s": offers.design_s, "guard_s": offers.guard_s}
        for node_id, contract, market, source in zip(
            offered, offers.contracts, markets, offers.sources, strict=True
        ):
            if contract is None:
                reason = "every contract would lose money on this ES"
                self._ledger_add(server_round, node_id, "no_offer", reason=reason, source=source)
                continue
            self.engagements[node_id] = _Engagement(contract, market, source)
        return [n for n in offered if n in self.engagements]

    def _forfeit_unfinished_epochs(self, server_round: int) -> None:
        """Held pay of an epoch whose period-2 work never came is the cloud's (ex ante)."""
        for node_id, engagement in self.engagements.items():
            if engagement.held > 0:
                reason = "gone before period 2: held period-1 pay forfeited"
                self._ledger_add(
                    server_round, node_id, "forfeit", reason=reason, forfeited=engagement.held
                )
                engagement.held = 0.0

    def _market_of(self, node_id: int, belief: np.ndarray) -> Market | None:
        """The market the contracts of ``node_id`` are designed on. Under the ``deadline`` rule
        a designed contract's every item meets the deadline (``deadline_market``); None when
        the ES cannot meet it at any effort. The flat fee's fixed effort is not designed."""
        market = es_market(self.cfg.market, self.facts[node_id], self.module.adapter_bytes, belief)
        if (
            self.cfg.incentive.selection != "deadline"
            or self.cfg.incentive.policy in UNCOMMITTED_POLICIES
        ):
            return market
        return deadline_market(market, self.cfg.incentive.deadline_s)

    def _query(self, node_id: int, values: dict) -> Message:
        return Message(
            RecordDict({CONFIG: ConfigRecord(dict(values))}),
            message_type=MessageType.QUERY,
            dst_node_id=node_id,
        )

    def _offer_message(self, server_round: int, node_id: int) -> Message:
        return self._query(node_id, self._offer(server_round, node_id).to_dict())

    def _offer(self, server_round: int, node_id: int) -> Offer:
        """The offer this round makes ``node_id``: its contract and where it stands in it."""
        engagement = self.engagements[node_id]
        c = engagement.contract
        report = engagement.report if self._period == 2 else None
        return Offer(
            server_round=server_round,
            period=self._period,
            report=DECLINE if report is None else report,
            oracle=self.cfg.incentive.policy in ORACLE_POLICIES,
            f1=tuple(c.f1),
            r1=tuple(c.r1),
            f2=tuple(c.f2.ravel()),
            r2=tuple(c.r2.ravel()),
            held=engagement.held if self._period == 2 else 0.0,
            participation=engagement.market.participation,
        )

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
        self,
        server_round: int,
        offered: list[int],
        choices: dict[int, int | None],
        nonces: dict[int, int] | None = None,
    ) -> dict[int, _Assignment]:
        """Record declines, pick participants among accepters, update beliefs.

        ``nonces``: the nonces the train offers carried (their replies must echo them); else
        each chosen ES gets a fresh one with its TRAIN instruction.
        """
        candidates: dict[int, _Assignment] = {}
        for node_id in offered:
            if node_id not in choices:
                self._ledger_add(
                    server_round,
                    node_id,
                    "no_reply",
                    reason="no answer to the offer",
                    **self._settle_held(node_id, delivered=False),
                )
                self.beliefs.observe_choice(node_id, None)
                continue
            item = choices[node_id]
            belief = self.beliefs.belief(node_id)
            self.beliefs.observe_choice(node_id, item)
            engagement = self.engagements[node_id]
            if item is None:
                settled = self._settle_held(node_id, delivered=False)
                self._ledger_add(server_round, node_id, "declined", **settled)
                if self._period == 1:
                    del self.engagements[node_id]
                continue
            if self._period == 1:
                engagement.report = item
            f, reward = engagement.contract.terms(self._period, item, engagement.report)
            value = float(value_of_work(f, engagement.market))
            steps = local_steps_for(f, self.cfg.market.f_max_ghz, self.cfg.training.local_steps)
            market = engagement.market
            modelled = latency.construction_latency_s(f, market.workload_gcycles, market.upload_s)
            utility = es_period_utility(reward, f, market.types[item], market)
            candidates[node_id] = _Assignment(
                item,
                f,
                reward,
                value,
                steps,
                float(belief[item]),
                float(modelled),
                float(utility),
                nonces[node_id] if nonces else new_nonce(),
            )
        repeat_value = self.cfg.incentive.repeat_value
        # rounds each ES's work was accepted in, from the ledger (restored with a checkpoint)
        trained = Counter(e.node_id for e in self.ledger.entries if e.status == "paid")
        selection = select_participants(
            [
                Candidate(
                    n,
                    selection_surplus(a.cloud_value, a.reward, trained[n], repeat_value),
                    a.modelled_latency_s,
                    trained[n],
                )
                for n, a in candidates.items()
            ],
            self.cfg.federation.es_per_round,
            self.cfg.incentive,
            rng_for(self.cfg.seed, "selection", server_round),
        )
        self._deadline_s = selection.deadline_s
        for node_id, a in candidates.items():
            if node_id not in selection.chosen:
                # the ES kept its commitment; the cloud chose not to use it: pay what it holds
                settled = self._settle_held(node_id, delivered=True)
                reason = selection.reasons[node_id]
                self._ledger_add(
                    server_round,
                    node_id,
                    "not_selected",
                    a,
                    reason=reason,
                    modelled_latency_s=a.modelled_latency_s,
                    **settled,
                )
        return {
            n: dataclasses.replace(candidates[n], chosen_because=selection.reasons[n])
            for n in selection.chosen
        }

    def _settle_held(self, node_id: int, delivered: bool) -> dict[str, float]:
        """Ledger fields that settle an ES's held pay: paid out if it kept its commitment,
        forfeited if it did not (only in period 2; nothing is held otherwise)."""
        engagement = self.engagements.get(node_id)
        if self._period != 2 or engagement is None or engagement.held == 0:
            return {}
        held, engagement.held = engagement.held, 0.0
        return {"paid": held, "released": held} if delivered else {"forfeited": held}

    def _holds_back(self, server_round: int, node_id: int) -> bool:
        """Ex ante: period-1 pay waits for the period-2 work (unless the run ends first)."""
        engagement = self.engagements.get(node_id)
        return (
            self._period == 1
            and engagement is not None
            and engagement.market.participation == "ex_ante"
            and server_round < self.cfg.federation.num_rounds
        )

    def _train_message(
        self, server_round: int, node_id: int, a: _Assignment, arrays: ArrayRecord
    ) -> Message:
        instruction = TrainInstruction(
            server_round, a.steps, self.module.base.fingerprint, a.f_ghz, a.reward, a.nonce, a.item
        )
        content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(instruction.to_dict())})
        return Message(content, message_type=MessageType.TRAIN, dst_node_id=node_id)

    # ------------------------------------------------------------------ aggregate

    def validate_replies(self, replies: list[Message]) -> list[Message]:
        """Validate every train reply (once a round); the valid ones, one per ES, in order.

        The first reply of a node is the one judged: later ones are duplicates; a reply from a
        node that was not asked to train is unsolicited (both are logged and ignored). A
        reply is rejected unless it is well-formed (:func:`split_replies`), echoes its
        instruction's round and nonce, and claims the work asked. The rejections are kept for
        this round's ledger. A wrapper that must drop invalid replies before it touches them
        (central DP clips them) calls this first; otherwise :meth:`aggregate_train` does.
        """
        replies = self._settle_train_offers(list(replies))
        ignored: list[RejectedReply] = []
        firsts: list[Message] = []
        seen: set[int] = set()
        for message in replies:
            node_id = int(message.metadata.src_node_id)
            if node_id in seen:
                ignored.append(RejectedReply(node_id, "duplicate reply (the first one counts)"))
            elif node_id not in self._assignments:
                ignored.append(RejectedReply(node_id, "unsolicited: not asked to train"))
            else:
                firsts.append(message)
            seen.add(node_id)
        for outcome in ignored:
            log.warning("ignored reply from node %s: %s", outcome.node_id, outcome.reason)
        accepted, rejected = split_replies(firsts, self.module, self.cfg.data.samples_per_es)
        accepted, refused = self._check_instruction_echo(accepted)
        self._validated = _ValidatedReplies(
            {r.node_id: r for r in accepted}, [*rejected, *refused], ignored
        )
        return [m for m in firsts if int(m.metadata.src_node_id) in self._validated.accepted]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, pay and aggregate the valid replies; record the round; commit it."""
        replies = list(replies)
        if self._validated is None:
            self.validate_replies(replies)
        validated, self._validated = self._validated, None
        try:
            merged, metrics = self._aggregate(self.absolute_round(server_round), replies, validated)
        finally:
            self._references.settle()  # a round never leaves its reference running
        if self.commits:
            self.commit_round(server_round, self.checkpoint_dir, merged)
        return (None if merged is None else adapter_to_record(merged)), metrics

    def commit_round(
        self, server_round: int, root: Path | None, adapter: AdapterState | None
    ) -> None:
        """Make Flower's ``server_round`` final: checkpoint it, then write the ledger.

        The round's ledger rows (offers, rejections, payments) are in memory until here. The
        checkpoint (the module after the round, the strategy's state and the ledger with these
        rows) is the commit point; only once it is in place is the run's ``ledger.csv``
        rewritten, with the same bytes. A crash before that leaves both as they were and a
        resumed run redoes the round, paying it once. Between checkpoint rounds
        (``federation.checkpoint_every`` > 1) the rows wait for the next checkpoint; without
        ``root`` (no checkpoints, nothing to resume) the ledger is written every round.
        ``adapter`` is the module after the round (None: unchanged, the one the round sent).
        """
        server_round = self.absolute_round(server_round)
        fed = self.cfg.federation
        due = server_round % fed.checkpoint_every == 0 or server_round >= fed.num_rounds
        if root is not None and not due:
            return
        ledger_csv = self.ledger.csv_text()
        if root is not None:
            state = self._global_state if adapter is None else adapter
            config = resume_fields(self.cfg)
            save_checkpoint(root, server_round, state, self.state_dict(), ledger_csv, config)
        self.ledger.write(ledger_csv)

    def _aggregate(
        self, server_round: int, replies: list[Message], validated: _ValidatedReplies
    ) -> tuple[AdapterState | None, MetricRecord]:
        # the adapters are read from the replies given: a DP wrapper has clipped them since
        accepted, failed = [], []
        for message in replies:
            node_id = int(message.metadata.src_node_id)
            if node_id not in validated.accepted or node_id in {r.node_id for r in accepted}:
                continue
            try:
                adapter = decode_adapter(message.content[ARRAYS], self.module)
            except Exception as err:  # noqa: BLE001 -- one bad reply never ends the round
                failed.append(RejectedReply(node_id, f"undecodable module: {err}"))
                continue
            accepted.append(dataclasses.replace(validated.accepted[node_id], adapter=adapter))
        kept, screened = self._judge(server_round, validated, accepted)
        merged, kept, unmerged = self._merge(kept)
        self._last_step = None
        if merged is not None:
            keys = list(self._global_state)
            self._last_step = flatten(merged, keys) - flatten(self._global_state, keys)
        for outcome in [*validated.rejected, *failed, *screened, *unmerged]:
            a = self._assignments.get(outcome.node_id)
            settled = self._settle_held(outcome.node_id, delivered=False) if a else {}
            self._ledger_add(
                server_round, outcome.node_id, "rejected", a, reason=outcome.reason, **settled
            )
        answered = {int(m.metadata.src_node_id) for m in replies}
        answered |= {r.node_id for r in validated.rejected}
        for node_id, a in self._assignments.items():
            if node_id not in answered:
                settled = self._settle_held(node_id, delivered=False)
                self._ledger_add(
                    server_round, node_id, "no_reply", a, reason="no train reply", **settled
                )
        # only work that is in the aggregate is paid
        for reply in kept:
            self._pay(server_round, reply)
        row = self._round_row(server_round, len(replies))
        row["ignored_replies"] = len(validated.ignored)
        row["incompatible_es"] = len(self.incompatible)
        self.outputs.record_round(row)
        if merged is None:
            log.warning("round %d: no usable module; the global module is unchanged", server_round)
            return None, MetricRecord({"participants": 0})
        return merged, MetricRecord(
            {"participants": len(kept), "cloud-utility": row["cloud_utility"]}
        )

    def _judge(
        self, server_round: int, validated: _ValidatedReplies, accepted: list[AcceptedReply]
    ) -> tuple[list[AcceptedReply], list[RejectedReply]]:
        """Judge the replies against the cloud's expectations (their modules as they arrived,
        before a DP wrapper clipped them); the kept ones, their updates clipped to the
        expected norm, and the rejected ones."""
        if not accepted:
            return [], []
        schedule = self.cfg.training.lr_schedule
        efforts = {n: learning_effort(schedule, a.steps) for n, a in self._assignments.items()}
        reference = self._references.take(
            server_round,
            self._global_state,
            [self._assignments[r.node_id].steps for r in accepted],
        )
        as_sent = [validated.accepted[r.node_id] for r in accepted]
        judged_kept, rejected, judged = judge_updates(
            self.expectations, self._global_state, as_sent, efforts, reference, self._last_step
        )
        self.expectations.record(judged)
        ids = {r.node_id for r in judged_kept}
        kept = [r for r in accepted if r.node_id in ids]
        return clip_to_expected(
            self.expectations, self._global_state, kept, efforts, reference
        ), rejected

    def _merge(
        self, kept: list[AcceptedReply]
    ) -> tuple[AdapterState | None, list[AcceptedReply], list[RejectedReply]]:
        """Aggregate the kept replies; a reply whose module cannot be aggregated is rejected
        alone. Returns the aggregate (None if nothing), the replies in it, the rejected."""
        if not kept:
            return None, [], []
        try:
            return self._combine(kept), kept, []
        except Exception as err:  # noqa: BLE001 -- find the culprit, keep the rest
            log.warning("round aggregation failed (%s); aggregating reply by reply", err)
        usable, unmerged = [], []
        for reply in kept:
            try:
                self._combine([reply])
                usable.append(reply)
            except Exception as err:  # noqa: BLE001
                unmerged.append(RejectedReply(reply.node_id, f"cannot be aggregated: {err}"))
        if usable:
            try:
                return self._combine(usable), usable, unmerged
            except Exception as err:  # noqa: BLE001
                reason = f"the round's aggregation failed: {err}"
                unmerged += [RejectedReply(r.node_id, reason) for r in usable]
        return None, [], unmerged

    def _combine(self, replies: list[AcceptedReply]) -> AdapterState:
        states = [r.adapter for r in replies]
        weights = [float(self._assignments[r.node_id].steps) for r in replies]
        if self.weighting == "uniform" or not sum(weights) > 0:
            weights = [1.0] * len(replies)
        merged = aggregate(self.cfg.federation.aggregation, states, weights)
        return server_step(self._global_state, merged, self.cfg.federation.server_learning_rate)

    def _check_instruction_echo(
        self, accepted: list[AcceptedReply]
    ) -> tuple[list[AcceptedReply], list[RejectedReply]]:
        """A reply must answer this round's instruction (its round and nonce: else it is a
        replay) and claim the work that was asked (an ES is paid for that work only)."""
        honest, refused = [], []
        for reply in accepted:
            a, m = self._assignments[reply.node_id], reply.metrics
            if m.server_round != self._round or m.nonce != a.nonce:
                reason = f"replay: answers round {m.server_round}'s instruction, not this one"
                if m.server_round == self._round:
                    reason = "replay: the nonce is not this round's instruction's"
                refused.append(RejectedReply(reply.node_id, reason))
            elif m.item != a.item:
                refused.append(RejectedReply(reply.node_id, f"names item {m.item}, not {a.item}"))
            elif m.train_steps != a.steps:
                claim = f"reported {m.train_steps} steps, asked {a.steps}"
                refused.append(RejectedReply(reply.node_id, claim))
            else:
                honest.append(reply)
        for outcome in refused:
            log.warning("rejected reply from node %s: %s", outcome.node_id, outcome.reason)
        return honest, refused

    def _pay(self, server_round: int, reply: AcceptedReply) -> None:
        """Pay accepted work: now, or (ex ante, period 1) held until the period-2 work."""
        a = self._assignments[reply.node_id]
        if self._holds_back(server_round, reply.node_id):
            self.engagements[reply.node_id].held = a.reward
            pay = {"paid": 0.0, "held": a.reward}
        else:
            released = self._settle_held(reply.node_id, delivered=True).get("released", 0.0)
            pay = {"paid": a.reward + released, "released": released}
        self._ledger_add(
            server_round,
            reply.node_id,
            "paid",
            a,
            **pay,
            es_utility=a.es_utility_est,
            modelled_latency_s=a.modelled_latency_s,
            wall_s=reply.metrics.train_wall_s,
        )

    def _ledger_add(
        self,
        server_round: int,
        node_id: int,
        status: str,
        a: _Assignment | None = None,
        reason: str = "",
        source: str | None = None,
        **paid_fields: float,
    ) -> None:
        reason = reason or (a.chosen_because if a is not None else "")
        entry = LedgerEntry(server_round, self._period, node_id, status, reason=reason)
        engagement = self.engagements.get(node_id)
        entry.offer_source = source or (engagement.source if engagement else "")
        if a is not None:
            entry.item, entry.f_ghz, entry.reward_offered = a.item, a.f_ghz, a.reward
            entry.cloud_value = a.cloud_value
            entry.belief_on_revealed_type = a.belief_on_item
        for key, value in paid_fields.items():
            setattr(entry, key, value)
        self.ledger.add(entry)

    def _round_row(self, server_round: int, num_replies: int) -> dict:
        adapter_bytes = self.module.adapter_bytes
        summary = self.ledger.round_summary(server_round)
        # what the contracts maximise: period-2 utility at the market's discount
        weight = period_weight(self._period, self.cfg.market.discount)
        return {
            "round": server_round,
            "period": self._period,
            **summary,
            "cloud_utility_discounted": summary["cloud_utility"] * weight,
            **self._design_times,
            "round_deadline_s": self._deadline_s,
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
                "source": e.source,
                "held": e.held,
            }
            for n, e in self.engagements.items()
        }
        return {
            "beliefs": {str(k): v for k, v in self.beliefs.state().items()},
            "facts": {str(n): p.to_dict() for n, p in self.facts.items()},
            "incompatible": {str(n): reason for n, reason in self.incompatible.items()},
            "engagements": engagements,
            "expectations": self.expectations.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (node ids that do not reconnect are simply not used)."""
        self.beliefs.load_state(state["beliefs"])
        self.facts = {int(n): PublicFacts.from_dict(p) for n, p in state["facts"].items()}
        self.incompatible = {int(n): str(r) for n, r in state.get("incompatible", {}).items()}
        # checkpoints written before the expectations were kept start them afresh
        self.expectations.load_state_dict(state.get("expectations", {"ratios": []}))
        self.engagements = {}
        for n, e in state["engagements"].items():
            market = self._market_of(int(n), np.asarray(e["prior"]))
            if market is None:  # the resumed config checks match the checkpoint's: not reached
                raise ValueError(f"node {n}'s contract cannot meet the configured deadline")
            contract = DynamicContract(e["f1"], e["r1"], e["f2"], e["r2"])
            self.engagements[int(n)] = _Engagement(
                contract, market, e["source"], e["report"], float(e["held"])
            )

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
