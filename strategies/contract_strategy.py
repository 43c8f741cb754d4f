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
(``incompatible_es``), and never profiled, offered or paid again in this run. An ES whose own
data is unusable answers that query with its reason instead: it is recorded once as
``declined``, with the reason, and is likewise never asked, offered or paid again.
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

The pieces, calls going one way (down): this module is the Flower face (the hooks, the
constructor's state, checkpoints); :mod:`strategies.recruiter` admits nodes, designs offers,
collects choices and selects participants; :mod:`strategies.reply_judge` validates, screens
and merges the replies; :mod:`strategies.contract_book` holds the engagements, the escrow of
held pay and writes every ledger row. A round's decisions live in one
:class:`~strategies.round_plan.RoundPlan`, made by ``configure_train`` and consumed by
``aggregate_train``.

Round numbers: Flower counts the rounds of this run from 1; a resumed run continues the
numbering of the run it resumes. :meth:`ContractStrategy.absolute_round` is the one place that
adds the offset; every public method takes Flower's number.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fed_agent.checkpoints import Checkpoint, CheckpointError, resume_fields, save_checkpoint
from fed_agent.choices import check_choice
from fed_agent.config import ExperimentConfig
from fed_agent.incentives.beliefs import BeliefTracker
from fed_agent.incentives.ledger import Ledger
from fed_agent.incentives.policies import ContractPolicy
from fed_agent.incentives.profiles import PublicFacts, period_weight
from fed_agent.modules.adapter import AgentModule
from fed_agent.outputs import RunOutputs
from fed_agent.protocol import AdapterState
from fed_agent.screening.judge import UpdateScreen
from fed_agent.text import one_line
from strategies.contract_book import ContractBook, Engagement
from strategies.records import adapter_to_record, record_to_adapter
from strategies.recruiter import Recruiter
from strategies.reply_judge import WEIGHTINGS, ReplyJudge, Verdict
from strategies.round_plan import RoundPlan
from strategies.sampling import wait_for_nodes

log = logging.getLogger(__name__)


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
        self.round_offset = round_offset
        self.checkpoint_dir = checkpoint_dir
        self.commits = commits
        self.weighting = weighting
        self.book = ContractBook(cfg, ledger)
        self.recruiter = Recruiter(cfg, module, policy, self.book)
        self.judge = ReplyJudge(cfg, module, weighting)
        self.plan: RoundPlan | None = None
        """The round being configured or aggregated (None before the first)."""
        if saved_state is not None:
            self.load_state_dict(saved_state)

    @classmethod
    def check_saved_state(
        cls, cfg: ExperimentConfig, module: AgentModule, policy: ContractPolicy, saved: Checkpoint
    ) -> None:
        """Load a checkpoint's state into a throwaway strategy (no run folder, no ledger file):
        a state of another shape is refused here, before the run's folder is touched.

        Raises
        ------
        CheckpointError
            Naming the checkpoint's ``state.json`` and what could not be restored.
        """
        with tempfile.TemporaryDirectory() as scratch:
            ledger = Ledger(Path(scratch) / "ledger.csv")
            try:
                cls(cfg, module, None, policy, ledger, saved_state=saved.state)  # type: ignore[arg-type]
            except (AttributeError, IndexError, KeyError, TypeError, ValueError) as err:
                raise CheckpointError(
                    f"{saved.folder / 'state.json' if saved.folder else 'state.json'} cannot be "
                    f"restored ({type(err).__name__}: {one_line(err)})"
                ) from None

    # the collaborators' state, by the names the rest of the project reads
    @property
    def ledger(self) -> Ledger:
        return self.book.ledger

    @property
    def engagements(self) -> dict[int, Engagement]:
        return self.book.engagements

    @property
    def policy(self) -> ContractPolicy:
        return self.recruiter.policy

    @policy.setter
    def policy(self, policy: ContractPolicy) -> None:
        self.recruiter.policy = policy

    @property
    def beliefs(self) -> BeliefTracker:
        return self.recruiter.beliefs

    @property
    def facts(self) -> dict[int, PublicFacts]:
        return self.recruiter.facts

    @property
    def incompatible(self) -> dict[int, str]:
        return self.recruiter.incompatible

    @property
    def expectations(self) -> UpdateScreen:
        return self.judge.expectations

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
        fed = self.cfg.federation
        plan = RoundPlan.begin(
            server_round,
            record_to_adapter(arrays),
            self.cfg.incentive.rounds_per_period,
            fed.num_rounds,
        )
        node_ids = wait_for_nodes(grid, fed.min_available_es, fed.round_timeout_s)
        offered, design_times = self.recruiter.design_offers(grid, plan, node_ids)
        plan = dataclasses.replace(plan, design_times=design_times)
        if self.recruiter.folds_offers(offered):
            messages, nonces, steps = self.recruiter.train_offers(plan, offered, arrays)
            plan = dataclasses.replace(plan, train_offers=nonces, offered_steps=steps)
        else:
            choices = self.recruiter.collect_choices(grid, plan, offered)
            chosen, deadline_s = self.recruiter.select(plan, offered, choices)
            plan = dataclasses.replace(plan, assignments=chosen, deadline_s=deadline_s)
            messages = [self.recruiter.train_message(plan, n, a, arrays) for n, a in chosen.items()]
        self.plan = plan
        if messages:
            self.judge.start_reference(plan)
        return messages

    # ------------------------------------------------------------------ aggregate

    def validate_replies(self, replies: list[Message]) -> list[Message]:
        """Validate every train reply (once a round); the valid ones, one per ES, in order.

        The first reply of a node is the one judged: later ones are duplicates; a reply from a
        node that was not asked to train is unsolicited (both are logged and ignored). A
        reply is rejected unless it is well-formed (``validation.split_replies``), echoes its
        instruction's round and nonce, and claims the work asked. The rejections are kept for
        this round's ledger. A wrapper that must drop invalid replies before it touches them
        (central DP clips them) calls this first; otherwise :meth:`aggregate_train` does.
        """
        replies = self._settle_train_offers(list(replies))
        validated, usable = self.judge.validate(self.plan, replies)
        self.plan = dataclasses.replace(self.plan, validated=validated)
        return usable

    def _settle_train_offers(self, replies: list[Message]) -> list[Message]:
        """Read this round's choices from the replies to its train offers (once), record them
        as a separate offer's choices are, and return the replies that hold work (not the
        declines, nor the exit items of excluded ESs)."""
        plan = self.plan
        if not plan.train_offers:
            return replies
        choices = self.recruiter.choices_in_train_replies(plan, replies)
        offered = dict(plan.train_offers)
        chosen, deadline_s = self.recruiter.select(plan, list(offered), choices, nonces=offered)
        self.plan = dataclasses.replace(
            plan, assignments=chosen, deadline_s=deadline_s, train_offers={}
        )
        # a decline or the exit item: the reply holds no work
        idle = {
            n
            for n, item in choices.items()
            if item is None or self.recruiter.names_exit(plan, n, item)
        }
        return [r for r in replies if int(r.metadata.src_node_id) not in idle]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, pay and aggregate the valid replies; record the round; commit it."""
        replies = list(replies)
        if self.plan.validated is None:
            self.validate_replies(replies)
        plan, validated = self.plan, self.plan.validated
        self.plan = dataclasses.replace(plan, validated=None)  # validated once, used once
        try:
            verdict = self.judge.conclude(plan, replies, validated)
        finally:
            self.judge.references.settle()  # a round never leaves its reference running
        metrics = self._settle_round(plan, replies, verdict)
        if self.commits:
            self.commit_round(server_round, self.checkpoint_dir, verdict.merged)
        return (None if verdict.merged is None else adapter_to_record(verdict.merged)), metrics

    def _settle_round(self, plan: RoundPlan, replies: list[Message], verdict: Verdict):
        """Record the verdict: refusals, missing replies, pay for the work merged; the round's
        metrics row. Returns Flower's metrics of the round."""
        for outcome in verdict.rejected:
            self.book.refuse(plan, outcome.node_id, "rejected", outcome.reason)
        answered = {int(m.metadata.src_node_id) for m in replies}
        answered |= {r.node_id for r in plan.validated.rejected}
        for node_id in plan.assignments:
            if node_id not in answered:
                self.book.refuse(plan, node_id, "no_reply", "no train reply")
        # only work that is in the aggregate is paid
        for reply in verdict.kept:
            self.book.pay(plan, reply, verdict.pay_fractions.get(reply.node_id, 1.0))
        if plan.closes_epoch:  # held pay still unsettled: its ES is gone
            self.book.forfeit_unfinished(plan)
        row = self._round_row(plan, len(replies))
        row["ignored_replies"] = len(plan.validated.ignored)
        row["incompatible_es"] = len(self.incompatible)
        self.outputs.record_round(row)
        if verdict.merged is None:
            log.warning(
                "round %d: no usable module; the global module is unchanged", plan.server_round
            )
            return MetricRecord({"participants": 0})
        return MetricRecord(
            {"participants": len(verdict.kept), "cloud-utility": row["cloud_utility"]}
        )

    def _round_row(self, plan: RoundPlan, num_replies: int) -> dict:
        adapter_bytes = self.module.adapter_bytes
        summary = self.ledger.round_summary(plan.server_round)
        # what the contracts maximise: period-2 utility at the market's discount
        weight = period_weight(plan.period, self.cfg.market.discount)
        return {
            "round": plan.server_round,
            "period": plan.period,
            **summary,
            "cloud_utility_discounted": summary["cloud_utility"] * weight,
            **plan.design_times,
            "round_deadline_s": plan.deadline_s,
            "bytes_down": len(plan.assignments) * adapter_bytes,
            "bytes_up": num_replies * adapter_bytes,
            "round_wall_s": time.perf_counter() - plan.started,
        }

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
            state = adapter if adapter is not None or self.plan is None else self.plan.global_state
            config = resume_fields(self.cfg)
            save_checkpoint(root, server_round, state, self.state_dict(), ledger_csv, config)
        self.ledger.write(ledger_csv)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Beliefs, public facts and current contracts, by node id (JSON-ready)."""
        return {
            "beliefs": {str(k): v for k, v in self.beliefs.state().items()},
            "facts": {str(n): p.to_dict() for n, p in self.facts.items()},
            "incompatible": {str(n): reason for n, reason in self.incompatible.items()},
            "identities": self.recruiter.identities.state_dict(),
            "declined": {str(n): reason for n, reason in self.recruiter.declined.items()},
            "engagements": self.book.state_dict(),
            "trained": {str(n): count for n, count in self.book.trained.items()},
            "expectations": self.expectations.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (node ids that do not reconnect are simply not used)."""
        recruiter = self.recruiter
        recruiter.beliefs.load_state(state["beliefs"])
        recruiter.facts = {int(n): PublicFacts.from_dict(p) for n, p in state["facts"].items()}
        recruiter.incompatible = {int(n): str(r) for n, r in state.get("incompatible", {}).items()}
        recruiter.identities.load_state_dict(state.get("identities", {}))
        recruiter.declined = {int(n): str(r) for n, r in state.get("declined", {}).items()}
        # checkpoints written before the expectations were kept start them afresh
        self.expectations.load_state_dict(state.get("expectations", {"ratios": []}))
        self.book.load_state_dict(state["engagements"], recruiter.market_of)
        if "trained" in state:  # else as the ledger counts them by node id
            self.book.trained = Counter({int(n): int(c) for n, c in state["trained"].items()})

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
