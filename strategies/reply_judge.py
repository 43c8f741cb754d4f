"""The reply judge: which train replies of a round are used, and the module they make.

Hygiene: the first reply of a node is the one judged (later ones are duplicates), a reply from
a node not asked to train is unsolicited (both are ignored), a reply must be well-formed
(``strategies.validation``), echo its instruction's round and nonce (else it is a replay) and
claim the work asked. Screening: the accepted updates are judged against the cloud's own
expectations (its reference update, trained while the ESs train; the norm per unit of
contracted effort seen in earlier rounds; a replay of the last global step:
``fed_agent.screening.judge``) and clipped to their expected norm. Settlement: the kept
updates, as a set, earn a share of their pay and weight (``fed_agent.screening.settlement``:
copies, near-copies and means of peers share one update's, an update whose gain on the
cloud's split falls short of its effort's is paid by its gain, and with
``screening.effort_clause`` one whose direction shows less effort than contracted is paid by
the effort it shows); one that earns nothing is rejected. Merging: the kept modules are
aggregated, weighted by their contracted steps (times their share) or uniformly; a module
that cannot be aggregated is rejected alone.

The judge decides and returns verdicts; it writes no ledger row and never calls the strategy,
the recruiter or the contract book.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
from flwr.app import Message

from fed_agent.config import ExperimentConfig
from fed_agent.data.partition import cloud_examples
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.reference import update_gains
from fed_agent.modules.training import learning_effort
from fed_agent.protocol import ARRAYS, AdapterState
from fed_agent.screening.aggregation import aggregate, server_step
from fed_agent.screening.judge import Reference, UpdateScreen
from fed_agent.screening.robust import flatten
from fed_agent.screening.settlement import settle
from strategies.reference_job import ReferenceJob
from strategies.round_plan import RoundPlan, ValidatedReplies
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


@dataclass(frozen=True)
class Verdict:
    """A round's outcome: the merged module (None: nothing usable), the replies in it (to be
    paid) and every chosen ES's reply that was not used, with its reason."""

    merged: AdapterState | None
    kept: list[AcceptedReply]
    rejected: list[RejectedReply]
    pay_fractions: dict[int, float] = dataclasses.field(default_factory=dict)
    """Node id -> the share of its contracted reward a kept reply earned (absent: in full)."""


class ReplyJudge:
    """Validation, screening and merging of train replies (see the module docstring)."""

    def __init__(self, cfg: ExperimentConfig, module: AgentModule, weighting: str) -> None:
        self.cfg = cfg
        self.module = module
        self.weighting = weighting
        self.expectations = UpdateScreen(cfg.screening)
        """What the cloud expects of an honest update (calibrated round by round)."""
        self.references = ReferenceJob(cfg, module)
        """The round's reference update, trained while the ESs train."""
        self._last_step: np.ndarray | None = None
        """The previous round's change of the global module (flattened; None at first)."""
        self._gauge: tuple[AgentModule, list] | None = None
        """A twin of the module and the cloud's split that measure each update's gain."""

    def start_reference(self, plan: RoundPlan) -> None:
        """Begin the round's reference update for the work planned (or offered)."""
        planned = [a.steps for a in plan.assignments.values()] or list(plan.offered_steps)
        self.references.start(plan.server_round, plan.global_state, planned)

    # ------------------------------------------------------------------ hygiene

    def validate(
        self, plan: RoundPlan, replies: list[Message]
    ) -> tuple[ValidatedReplies, list[Message]]:
        """Sort out the round's replies (see the module docstring); with the valid ones, one
        per ES, in order."""
        ignored: list[RejectedReply] = []
        firsts: list[Message] = []
        seen: set[int] = set()
        for message in replies:
            node_id = int(message.metadata.src_node_id)
            if node_id in seen:
                ignored.append(RejectedReply(node_id, "duplicate reply (the first one counts)"))
            elif node_id not in plan.assignments:
                ignored.append(RejectedReply(node_id, "unsolicited: not asked to train"))
            else:
                firsts.append(message)
            seen.add(node_id)
        for outcome in ignored:
            log.warning("ignored reply from node %s: %s", outcome.node_id, outcome.reason)
        accepted, rejected = split_replies(firsts, self.module, self.cfg.data.samples_per_es)
        accepted, refused = self._check_instruction_echo(plan, accepted)
        validated = ValidatedReplies(
            {r.node_id: r for r in accepted}, (*rejected, *refused), tuple(ignored)
        )
        usable = [m for m in firsts if int(m.metadata.src_node_id) in validated.accepted]
        return validated, usable

    def _check_instruction_echo(
        self, plan: RoundPlan, accepted: list[AcceptedReply]
    ) -> tuple[list[AcceptedReply], list[RejectedReply]]:
        """A reply must answer this round's instruction (its round and nonce: else it is a
        replay) and claim the work that was asked (an ES is paid for that work only)."""
        honest, refused = [], []
        for reply in accepted:
            a, m = plan.assignments[reply.node_id], reply.metrics
            if m.server_round != plan.server_round or m.nonce != a.nonce:
                reason = f"replay: answers round {m.server_round}'s instruction, not this one"
                if m.server_round == plan.server_round:
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

    # ------------------------------------------------------------------ screening, merging

    def conclude(
        self, plan: RoundPlan, replies: list[Message], validated: ValidatedReplies
    ) -> Verdict:
        """Decode, screen and merge the validated replies (their modules read from
        ``replies``: a DP wrapper may have clipped them since validation)."""
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
        kept, screened, expected, reference = self._screen(plan, validated, accepted)
        fractions, kept, unearned = self._settle(plan, kept, expected, reference)
        merged, kept, unmerged = self._merge_or_isolate(plan, kept, fractions)
        self._last_step = None
        if merged is not None:
            keys = list(plan.global_state)
            self._last_step = flatten(merged, keys) - flatten(plan.global_state, keys)
        rejected = [*validated.rejected, *failed, *screened, *unearned, *unmerged]
        return Verdict(merged, kept, rejected, {r.node_id: fractions[r.node_id] for r in kept})

    def _screen(
        self, plan: RoundPlan, validated: ValidatedReplies, accepted: list[AcceptedReply]
    ) -> tuple[list[AcceptedReply], list[RejectedReply], dict[int, float], Reference | None]:
        """Judge the replies against the cloud's expectations (their modules as they arrived,
        before a DP wrapper clipped them); the kept ones, their updates clipped to the
        expected norm, the rejected ones, each kept one's expected norm and the reference."""
        if not accepted:
            return [], [], {}, None
        schedule = self.cfg.training.lr_schedule
        efforts = {n: learning_effort(schedule, a.steps) for n, a in plan.assignments.items()}
        reference = self.references.take(
            plan.server_round,
            plan.global_state,
            [plan.assignments[r.node_id].steps for r in accepted],
        )
        as_sent = [validated.accepted[r.node_id] for r in accepted]
        judged_kept, rejected, judged = judge_updates(
            self.expectations, plan.global_state, as_sent, efforts, reference, self._last_step
        )
        self.expectations.record(judged)
        ids = {r.node_id for r in judged_kept}
        kept = [r for r in accepted if r.node_id in ids]
        expected = {n: self.expectations.expected_norm(efforts[n], reference) for n in ids}
        clipped = clip_to_expected(self.expectations, plan.global_state, kept, efforts, reference)
        return clipped, rejected, expected, reference

    def _settle(
        self,
        plan: RoundPlan,
        kept: list[AcceptedReply],
        expected: dict[int, float],
        reference: Reference | None,
    ) -> tuple[dict[int, float], list[AcceptedReply], list[RejectedReply]]:
        """Each kept reply's share of its pay and weight (``fed_agent.screening.settlement``);
        the replies that earned some, and those that earned none (rejected)."""
        if not kept:
            return {}, [], []
        keys = list(plan.global_state)
        origin = flatten(plan.global_state, keys)
        deltas = [flatten(r.adapter, keys) - origin for r in kept]
        if self.cfg.screening.quality_clause:  # gains cost a pass over the split per reply
            module, split = self._gauge_parts()
            batch = self.cfg.training.eval_batch_size
            gains = update_gains(module, plan.global_state, deltas, split, batch)
        else:
            gains = [float("nan")] * len(deltas)
        norms = [expected[r.node_id] for r in kept]
        schedule = self.cfg.training.lr_schedule
        efforts = [learning_effort(schedule, plan.assignments[r.node_id].steps) for r in kept]
        path = reference.path if reference is not None else ()
        settled_all = settle(deltas, gains, norms, self.cfg.screening, efforts, path)
        fractions, earned, unearned = {}, [], []
        for reply, settled in zip(kept, settled_all, strict=True):
            if settled.pay_fraction > 0:
                fractions[reply.node_id] = settled.pay_fraction
                earned.append(reply)
            else:
                outcome = RejectedReply(reply.node_id, f"earned nothing: {settled.detail}")
                log.warning("rejected reply from node %s: %s", reply.node_id, outcome.reason)
                unearned.append(outcome)
        return fractions, earned, unearned

    def _gauge_parts(self) -> tuple[AgentModule, list]:
        """The twin module and the cloud's split that measure gains (made on first use)."""
        if self._gauge is None:
            samples = self.cfg.screening.reference_samples
            split = cloud_examples(
                self.cfg.data, self.cfg.seed, samples, self.module.base.is_vision
            )
            self._gauge = (self.module.twin(), split)
        return self._gauge

    def _merge_or_isolate(
        self, plan: RoundPlan, kept: list[AcceptedReply], fractions: dict[int, float]
    ) -> tuple[AdapterState | None, list[AcceptedReply], list[RejectedReply]]:
        """Merge the kept replies; a reply whose module cannot be merged is rejected alone.
        Returns the merged module (None if nothing), the replies in it, the rejected."""
        if not kept:
            return None, [], []
        try:
            return self._merge(plan, kept, fractions), kept, []
        except Exception as err:  # noqa: BLE001 -- find the culprit, keep the rest
            log.warning("round aggregation failed (%s); aggregating reply by reply", err)
        usable, unmerged = [], []
        for reply in kept:
            try:
                self._merge(plan, [reply], fractions)
                usable.append(reply)
            except Exception as err:  # noqa: BLE001
                unmerged.append(RejectedReply(reply.node_id, f"cannot be aggregated: {err}"))
        if usable:
            try:
                return self._merge(plan, usable, fractions), usable, unmerged
            except Exception as err:  # noqa: BLE001
                reason = f"the round's aggregation failed: {err}"
                unmerged += [RejectedReply(r.node_id, reason) for r in usable]
        return None, [], unmerged

    def _merge(
        self, plan: RoundPlan, replies: list[AcceptedReply], fractions: dict[int, float]
    ) -> AdapterState:
        """The global module after one server step towards the replies' aggregate (weighted
        by contracted steps times earned share; equal weights under ``uniform``, central DP's
        weighting, whose noise is calibrated to equal weights)."""
        states = [r.adapter for r in replies]
        weights = [
            float(plan.assignments[r.node_id].steps) * fractions.get(r.node_id, 1.0)
            for r in replies
        ]
        if self.weighting == "uniform" or not sum(weights) > 0:
            weights = [1.0] * len(replies)
        merged = aggregate(self.cfg.federation.aggregation, states, weights)
        return server_step(plan.global_state, merged, self.cfg.federation.server_learning_rate)
