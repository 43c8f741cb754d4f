"""The recruiter: which ESs a round offers contracts to, what it offers, and whom it chooses.

Admission: ESs seen for the first time are asked for their public facts (a QUERY); a node
whose ClientApp answers with an error of the app itself is recorded once as ``incompatible``
and never asked again; an ES whose own data is unusable answers with its reason
(``protocol.DATA_DECLINE``) and is recorded once as ``declined``, never asked again either.
Offer design: in period 1 a seeded sample (or, with ``incentive.offer_targeting=surplus``, the
ESs whose work the cloud expects to be worth most) gets contracts designed in one batched call
of the contract policy (public facts + the cloud's belief about its type; under the deadline
rule with exit items, at the best price of a place: ``fed_agent.incentives.capacity``); in
period 2 the period-1 participants are offered their period-2 menu. Choices: each offered ES
names an item or declines, on a separate offer QUERY or on the reply to a train offer.
Selection: the cloud's beliefs learn from the choices, each accepter's work is valued (less
``Assignment.cost_of_choosing``), its latency modelled, and ``incentive.selection`` chooses at
most ``federation.es_per_round``. An ES that takes the exit item (f = 0,
``incentive.exclusion``) is no candidate: it is recorded ``excluded``, does no work and is paid
only what it carries.

The recruiter writes its ledger rows through the :class:`~strategies.contract_book.ContractBook`
and never calls the strategy or the reply judge.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fed_agent import latency
from fed_agent.config import ExperimentConfig
from fed_agent.contracts import Market, value_of_work
from fed_agent.contracts.utility import es_period_utility
from fed_agent.incentives.beliefs import BeliefTracker
from fed_agent.incentives.capacity import capacity_offers, expected_surpluses
from fed_agent.incentives.guard import GuardedOffers
from fed_agent.incentives.policies import ORACLE_POLICIES, UNCOMMITTED_POLICIES, ContractPolicy
from fed_agent.incentives.profiles import PublicFacts, deadline_market, es_market
from fed_agent.incentives.selection import Candidate, select_participants, selection_surplus
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.training import local_steps_for
from fed_agent.protocol import (
    ARRAYS,
    CONFIG,
    DATA_DECLINE,
    DECLINE,
    IDENTITY_CHALLENGE,
    PHASE,
    PUBLIC_FACTS,
    IdentityClaim,
    Offer,
    ProtocolError,
    TrainInstruction,
    TrainOffer,
    is_exit,
    new_challenge,
    new_nonce,
    read_identity,
)
from fed_agent.seeding import rng_for
from fed_agent.text import one_line
from strategies.choices import Choices, choices_in_answers, choices_in_train_replies, query
from strategies.contract_book import ContractBook, Engagement
from strategies.identities import EsIdentities
from strategies.round_plan import Assignment, RoundPlan
from strategies.sampling import sample_nodes
from strategies.validation import check_reply_type

log = logging.getLogger(__name__)
FOLDING_SELECTIONS = ("surplus", "random")
"""Rules that choose every accepter when at most ``es_per_round`` accept (offer on TRAIN)."""
INCOMPATIBLE_ERRORS = (ErrorCode.LOAD_CLIENT_APP_EXCEPTION, ErrorCode.CLIENT_APP_RAISED_EXCEPTION)
"""Error replies that say the node's ClientApp cannot answer the protocol (not a transient
fault such as a dead node or a timed-out reply, which is asked again later)."""


def _ignore(node_id: int, revealed_type: int | None) -> None:
    """A choice the beliefs do not learn from (a period's later rounds repeat its first)."""


class Recruiter:
    """Admission, offer design, choices and selection (see the module docstring)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        module: AgentModule,
        policy: ContractPolicy,
        book: ContractBook,
    ) -> None:
        self.cfg = cfg
        self.module = module
        self.policy = policy
        self.book = book
        base_market = Market.from_params(cfg.market)
        self.beliefs = BeliefTracker(base_market.prior, base_market.transition)
        self.facts: dict[int, PublicFacts] = {}
        self.incompatible: dict[int, str] = {}
        """Nodes whose ClientApp cannot answer the protocol, and why (never asked again)."""
        self.declined: dict[int, str] = {}
        """Nodes that declined to take part because their own data is unusable, and why (the
        ES's reason: file and line; never asked again)."""
        self.identities = EsIdentities()
        """Each ES's proven identity and key (``strategies.identities``), by node id."""

    # ------------------------------------------------------------------ admission

    def ask_public_facts(
        self, grid: Grid, plan: RoundPlan, node_ids: list[int], live: set[int]
    ) -> None:
        """Ask ESs seen for the first time for their public facts (workload, uplink gain); an
        ES that comes back under a new node id gets its saved engagement back (``live``: the
        connected nodes, ``EsIdentities.earlier_node``)."""
        new = [n for n in node_ids if n not in self.facts and n not in self.left_out]
        if not new:
            return
        challenges = {n: new_challenge() for n in new}
        queries = [query(n, {PHASE: PUBLIC_FACTS, IDENTITY_CHALLENGE: challenges[n]}) for n in new]
        replies = grid.send_and_receive(queries, timeout=self.cfg.federation.round_timeout_s)
        # in node-id order: of two nodes naming one ES in a batch, the same one is it
        for reply in sorted(replies, key=lambda r: int(r.metadata.src_node_id)):
            node_id = int(reply.metadata.src_node_id)
            if node_id not in new or node_id in self.facts or node_id in self.left_out:
                continue
            # an error's reason is whatever the node put there: None, or no string at all
            reason = reply.error.reason if reply.has_error() else None
            reason = reason if isinstance(reason, str) else "no reason given"
            if reply.has_error() and reason.startswith(DATA_DECLINE):
                self.mark_declined(plan, node_id, reason)
                continue
            if reply.has_error() and reply.error.code not in INCOMPATIBLE_ERRORS:
                log.warning(
                    "node %s sent no public facts (%s); asked again in a later round",
                    node_id,
                    one_line(reason),
                )
                continue
            try:
                if reply.has_error():
                    raise ProtocolError(reason)
                facts, claim = self._admissible_facts(reply, challenges[node_id])
            except Exception as err:  # noqa: BLE001 -- a node's reply never ends the run
                reason = f"cannot answer the contract protocol: {one_line(err)}"
                self.mark_incompatible(plan, node_id, reason)
                continue
            refused = None
            if claim is not None:
                refused = self.identities.impostor_reason(claim)
                refused = refused or self.identities.twin_reason(node_id, claim, live)
            if refused is not None:
                self.mark_incompatible(plan, node_id, refused)
                continue
            old = self.identities.earlier_node(node_id, claim, live, (self.facts, facts))
            if old is not None:
                self._rebind(old, node_id)
            self.facts[node_id] = facts
            if claim is not None:
                self.identities.add(node_id, claim)

    def _rebind(self, old: int, new: int) -> None:
        """Keep the ES known as node ``old`` (an earlier run) under node id ``new``: its facts,
        identity, belief and engagement (contract, report, held pay)."""
        self.facts[new] = self.facts.pop(old)
        self.identities.move(old, new)
        self.beliefs.move(old, new)
        self.book.rebind(old, new)
        name = self.identities.name_of(new)
        log.info("node %s is ES %s, known before as node %s", new, name, old)

    def _find_returning(self, grid: Grid, plan: RoundPlan, node_ids: list[int]) -> None:
        """When an engaged ES is not connected (a restart gives new node ids), ask the
        connected nodes not known yet for their public facts, which finds returning ESs."""
        live = set(node_ids)
        if all(n in live for n in self.book.engagements):
            return
        unknown = [n for n in node_ids if n not in self.facts and n not in self.left_out]
        self.ask_public_facts(grid, plan, unknown, live)

    def _admissible_facts(
        self, reply: Message, challenge: str
    ) -> tuple[PublicFacts, IdentityClaim | None]:
        """The public facts a reply holds, parsed and bounded (a finite number > 0 each), on
        which a market can be designed, and the identity it proves over ``challenge``: raises."""
        check_reply_type(reply, MessageType.QUERY)
        record = reply.content[PUBLIC_FACTS]
        if not isinstance(record, ConfigRecord):
            raise ProtocolError(f"public facts in a {type(record).__name__}, not a ConfigRecord")
        facts = PublicFacts.from_dict(record)
        identity = read_identity(record)
        if identity is not None and not self.identities.proves(identity, challenge):
            raise ProtocolError(f"its proof of identity {identity.name} does not verify")
        try:
            es_market(self.cfg.market, facts, self.module.adapter_bytes, None)
        except ValueError as err:
            raise ProtocolError(
                f"public facts {facts.to_dict()} give no valid market: {err}"
            ) from err
        return facts, identity

    @property
    def left_out(self) -> set[int]:
        """Nodes never asked or offered anything again: incompatible or declined."""
        return self.incompatible.keys() | self.declined.keys()

    def mark_declined(self, plan: RoundPlan, node_id: int, reason: str) -> None:
        """Record once that an ES declines to take part with its reason (a ``declined`` ledger
        row, unpaid; never asked again)."""
        reason = one_line(reason)
        self.declined[node_id] = reason
        log.warning("node %s takes no part: %s", node_id, reason)
        self.book.record(plan, node_id, "declined", reason=reason)

    def mark_incompatible(self, plan: RoundPlan, node_id: int, reason: str) -> None:
        """Record once that a node cannot take part (a ledger row; never asked again)."""
        reason = one_line(reason)
        self.incompatible[node_id] = reason
        log.warning(
            "node %s is incompatible and will not be offered contracts: %s", node_id, reason
        )
        self.book.record(plan, node_id, "incompatible", reason=reason)

    # ------------------------------------------------------------------ offer design

    def design_offers(
        self, grid: Grid, plan: RoundPlan, node_ids: list[int]
    ) -> tuple[list[int], dict[str, float]]:
        """The ESs to offer contracts to (their contracts designed) and the design times.

        The epoch's first round: a fresh seeded sample (or the ESs worth most,
        ``incentive.offer_targeting``) gets new contracts, designed in one batched call of the
        policy; its later rounds (the rest of period 1, period 2): the ESs that took a period-1
        item keep theirs. Under uniform sampling only sampled ESs are asked for their public
        facts (once each), so a round's cost follows the offers, not the number of connected
        ESs; other connected nodes are asked only while an engaged ES is missing (a restart).
        Targeted offers ask every connected ES once.
        """
        times = dict(plan.design_times)
        self._find_returning(grid, plan, node_ids)
        if not plan.opens_epoch:
            engaged = {n for n, e in self.book.engagements.items() if e.report is not None}
            return [n for n in node_ids if n in engaged], times
        rng = rng_for(self.cfg.seed, "offers", plan.server_round)
        usable = [n for n in node_ids if n not in self.left_out]
        k = self.cfg.incentive.max_offers_per_round
        if self.cfg.incentive.offer_targeting == "surplus" and k < len(usable):
            self.ask_public_facts(grid, plan, usable, set(node_ids))
            sampled = self._worth_most(usable, k, rng)
        else:
            sampled = sample_nodes(usable, k, rng)
            self.ask_public_facts(grid, plan, sampled, set(node_ids))
        offered = [n for n in sampled if n in self.facts]
        self.beliefs.advance_unobserved([n for n in self.book.engagements if n not in offered])
        designed = {n: self._designable_market(n) for n in offered}
        self.book.forfeit_unfinished(plan)
        self.book.engagements = {}
        for node_id, reason in designed.items():
            if isinstance(reason, str):
                self.book.record(plan, node_id, "no_offer", reason=reason, source="no_offer")
        offered = [n for n in offered if isinstance(designed[n], Market)]
        markets = [designed[n] for n in offered]
        if self.cfg.incentive.policy in UNCOMMITTED_POLICIES or self._cut_short(plan):
            markets = [m.replace(participation="per_period") for m in markets]
        if not markets:
            return [], times
        offers = self._offers(plan, markets)
        times = {"design_s": offers.design_s, "guard_s": offers.guard_s}
        for index, (node_id, contract, market, source) in enumerate(
            zip(offered, offers.contracts, markets, offers.sources, strict=True)
        ):
            if contract is None:
                reason = "every contract would cost more than this ES's work is worth to the cloud"
                self.book.record(plan, node_id, "no_offer", reason=reason, source=source)
                continue
            deferred = offers.deferred[index] if offers.deferred else None
            self.book.engagements[node_id] = Engagement(contract, market, source, deferred=deferred)
        return [n for n in offered if n in self.book.engagements], times

    def _cut_short(self, plan: RoundPlan) -> bool:
        """Whether the run ends before the period 2 of the epoch ``plan`` opens: a commitment
        to period 2 would promise pay (deferred or held, and the period-2 items an ES takes
        a period-1 item at a loss for) in a period that never comes, so such an epoch is
        offered per period: each period's item pays its own work."""
        period2 = plan.server_round + self.cfg.incentive.rounds_per_period
        return period2 > self.cfg.federation.num_rounds

    def _worth_most(self, node_ids: list[int], k: int, rng: np.random.Generator) -> list[int]:
        """The ``k`` ESs of ``node_ids`` with known public facts whose work the cloud expects
        to be worth most (``expected_surpluses`` of their designable markets; ties by a
        seeded draw), in the order of ``node_ids``. An ES with no designable market (none
        meets the deadline) comes last, and only to fill the offers."""
        known = [n for n in node_ids if n in self.facts]
        designed = [self._designable_market(n) for n in known]
        markets = [m for m in designed if isinstance(m, Market)]
        worth = iter(expected_surpluses(markets))
        scores = np.array([next(worth) if isinstance(m, Market) else -np.inf for m in designed])
        tiebreak = rng.permutation(len(known))
        picked = set(np.lexsort((tiebreak, -scores))[:k].tolist())
        return [n for i, n in enumerate(known) if i in picked]

    def _offers(self, plan: RoundPlan, markets: list[Market]) -> GuardedOffers:
        """The policy's offers, at the best price of a place under the deadline rule."""
        design = functools.partial(self.policy, deadline=self.designs_for_deadline)
        if not (self.cfg.incentive.prices_places and self.designs_for_deadline):
            return design(markets)
        rng = rng_for(self.cfg.seed, "place-price", plan.server_round)
        return capacity_offers(design, markets, self.cfg.federation.es_per_round, rng).offers

    def _designable_market(self, node_id: int) -> Market | str:
        """The market to design ``node_id``'s contract on, or why it gets no offer."""
        try:
            market = self.market_of(node_id, self.beliefs.belief(node_id))
        except ValueError as err:  # its facts passed admission; the belief cannot break it
            return f"no valid market for this ES: {one_line(err)}"
        if market is None:
            deadline, f_max = self.cfg.incentive.deadline_s, self.cfg.market.f_max_ghz
            return f"cannot meet the round's deadline of {deadline:g} s even at f_max {f_max:g} GHz"
        return market

    def market_of(self, node_id: int, belief: np.ndarray) -> Market | None:
        """The market the contracts of ``node_id`` are designed on. Under the ``deadline`` rule
        a designed contract's every item meets the deadline (``deadline_market``); None when
        the ES cannot meet it at any effort. The flat fee's fixed effort is not designed."""
        market = es_market(self.cfg.market, self.facts[node_id], self.module.adapter_bytes, belief)
        deadline = self.cfg.incentive.deadline_s
        return deadline_market(market, deadline) if self.designs_for_deadline else market

    @property
    def designs_for_deadline(self) -> bool:
        """Whether contracts are designed on the deadline's market (the ``deadline`` rule;
        not the flat fee, whose fixed effort is not designed)."""
        inc = self.cfg.incentive
        return inc.selection == "deadline" and inc.policy not in UNCOMMITTED_POLICIES

    def offer(self, plan: RoundPlan, node_id: int) -> Offer:
        """The offer this round makes ``node_id``: its contract and where it stands in it."""
        engagement = self.book.engagements[node_id]
        c = engagement.contract
        report = engagement.report if plan.period == 2 else None
        r2 = c.r2.copy()
        if report is not None:  # deferred pay of period-1 work it did not do is not offered
            r2[report] = np.maximum(r2[report] - self.book.deferred_split(plan, node_id)[1], 0)
        return Offer(
            server_round=plan.server_round,
            period=plan.period,
            report=DECLINE if report is None else report,
            oracle=self.cfg.incentive.policy in ORACLE_POLICIES,
            f1=tuple(c.f1),
            r1=tuple(c.r1),
            f2=tuple(c.f2.ravel()),
            r2=tuple(r2.ravel()),
            held=engagement.held if plan.period == 2 else 0.0,
            participation=engagement.market.participation,
        )

    def folds_offers(self, offered: list[int]) -> bool:
        """Whether every ES that accepts will be chosen (then offer and TRAIN are one)."""
        return (
            self.cfg.federation.fold_offers
            and bool(offered)
            and len(offered) <= self.cfg.federation.es_per_round
            and self.cfg.incentive.selection in FOLDING_SELECTIONS
        )

    def train_offers(
        self, plan: RoundPlan, offered: list[int], arrays: ArrayRecord
    ) -> tuple[list[Message], dict[int, int], tuple[int, ...]]:
        """One TRAIN message per offered ES carrying its offer and each item's steps; with
        the nonces (node id -> nonce) and the steps of every item offered."""
        messages, nonces, steps_offered = [], {}, []
        for node_id in offered:
            offer = self.offer(plan, node_id)
            steps = tuple(
                0 if offer.is_exit(item) else self._steps(offer.terms(item)[0])
                for item in range(offer.num_items)
            )
            nonces[node_id] = new_nonce()
            steps_offered.extend(steps)
            train_offer = TrainOffer(offer, steps, self.module.base.fingerprint, nonces[node_id])
            content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(train_offer.to_dict())})
            messages.append(Message(content, message_type=MessageType.TRAIN, dst_node_id=node_id))
        return messages, nonces, tuple(steps_offered)

    def train_message(
        self, plan: RoundPlan, node_id: int, a: Assignment, arrays: ArrayRecord
    ) -> Message:
        """The TRAIN instruction of a chosen ES (the global module and its committed work)."""
        instruction = TrainInstruction(
            plan.server_round,
            a.steps,
            self.module.base.fingerprint,
            a.f_ghz,
            a.reward,
            a.nonce,
            a.item,
        )
        content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(instruction.to_dict())})
        return Message(content, message_type=MessageType.TRAIN, dst_node_id=node_id)

    def _steps(self, f_ghz: float) -> int:
        return local_steps_for(f_ghz, self.cfg.market.f_max_ghz, self.cfg.training.local_steps)

    # ------------------------------------------------------------------ choices

    def collect_choices(self, grid: Grid, plan: RoundPlan, offered: list[int]) -> Choices:
        """Send each offered ES its offer (a QUERY) and read the item it names."""
        messages = [query(n, self.offer(plan, n).to_dict()) for n in offered]
        replies = grid.send_and_receive(messages, timeout=self.cfg.federation.round_timeout_s)
        return choices_in_answers(replies, set(offered), self.cfg.market.num_types)

    def choices_in_train_replies(self, plan: RoundPlan, replies: list[Message]) -> Choices:
        """The choices the replies to this round's train offers name (the first reply of each
        offered node; unsolicited and duplicate replies are left to validation)."""
        return choices_in_train_replies(replies, set(plan.train_offers), self.cfg.market.num_types)

    # ------------------------------------------------------------------ selection

    def select(
        self,
        plan: RoundPlan,
        offered: list[int],
        choices: Choices,
        nonces: dict[int, int] | None = None,
    ) -> tuple[dict[int, Assignment], float]:
        """Learn from the choices, then choose participants among the accepters: their
        assignments and the round's deadline.

        ``nonces``: the nonces the train offers carried (their replies must echo them); else
        each chosen ES gets a fresh one with its TRAIN instruction.
        """
        candidates = {}
        for node_id in offered:
            accepted = self._learn_choice(plan, node_id, choices)
            if accepted is not None and self.names_exit(plan, node_id, accepted[0]):
                self.book.exclude(plan, node_id, *accepted)  # no work, so no place to choose
            elif accepted is not None:
                nonce = nonces[node_id] if nonces else new_nonce()
                candidates[node_id] = self._assignment(plan, node_id, *accepted, nonce)
        return self._choose(plan, candidates)

    def names_exit(self, plan: RoundPlan, node_id: int, item: int | str | None) -> bool:
        """Whether ``item`` (an ES's answer) is the exit item of its contract this round."""
        engagement = self.book.engagements.get(node_id)
        if not isinstance(item, int) or engagement is None:
            return False
        report = engagement.report if plan.period == 2 else None
        return is_exit(engagement.contract.terms(plan.period, item, report)[0])

    def _learn_choice(
        self, plan: RoundPlan, node_id: int, choices: Choices
    ) -> tuple[int, np.ndarray] | None:
        """Update the belief about ``node_id`` from its choice (in a period's first round);
        record a decline, a missing answer or a refused one, each of which forfeits held pay.
        The item it accepted and the belief held when it chose, or None.

        In a later round of period 1 the ES is held to its period-1 report: another item is
        refused."""
        observe = self.beliefs.observe_choice if plan.round_in_period == 0 else _ignore
        item = choices.get(node_id, "no answer to the offer")
        engagement = self.book.engagements.get(node_id)
        if plan.period == 1 and not plan.opens_epoch and isinstance(item, int):
            if engagement is not None and item != engagement.report:
                item = f"named item {item}, not its period-1 report {engagement.report}"
        if isinstance(item, str):  # no answer, or one refused: no place in the round
            status = "no_reply" if node_id not in choices else "rejected"
            settled = self.book.settle_held(plan, node_id, delivered=False)
            self.book.record(plan, node_id, status, reason=item, **settled)
            observe(node_id, None)
            return None
        belief = self.beliefs.belief(node_id)
        observe(node_id, item)
        if item is None:
            settled = self.book.settle_held(plan, node_id, delivered=False)
            self.book.record(plan, node_id, "declined", **settled)
            if plan.period == 1:  # it leaves the epoch
                del self.book.engagements[node_id]
            return None
        if plan.opens_epoch:
            engagement.report = item
        return item, belief

    def _assignment(
        self, plan: RoundPlan, node_id: int, item: int, belief: np.ndarray, nonce: int
    ) -> Assignment:
        """The terms of ``item`` for ``node_id``: the work's value to the cloud, its steps,
        the modelled latency, the ES's utility as the cloud estimates it, and the belief
        (held when it chose) on the type the item is designed for."""
        engagement = self.book.engagements[node_id]
        market = engagement.market
        f, reward = engagement.contract.terms(plan.period, item, engagement.report)
        owed, unearned = self.book.deferred_split(plan, node_id)
        earlier, this_round = self.book.due_at_close(plan, node_id)  # no period 2 follows
        reward += earlier + this_round - unearned
        owed += earlier
        modelled = latency.construction_latency_s(f, market.workload_gcycles, market.upload_s)
        return Assignment(
            item,
            f,
            reward,
            float(value_of_work(f, market)),
            self._steps(f),
            float(belief[item]),
            float(modelled),
            float(es_period_utility(reward, f, market.types[item], market)),
            nonce,
            owed=owed,
            deferred_cost=self.book.deferred_cost(plan, node_id, item),
        )

    def _choose(
        self, plan: RoundPlan, candidates: dict[int, Assignment]
    ) -> tuple[dict[int, Assignment], float]:
        """Run ``incentive.selection`` on the accepters; record those not chosen."""
        repeat_value = self.cfg.incentive.repeat_value
        trained = self.book.trained  # rounds each ES's work was paid in, whatever its node id
        selection = select_participants(
            [
                Candidate(
                    n,
                    selection_surplus(a.cloud_value, a.cost_of_choosing, trained[n], repeat_value),
                    a.modelled_latency_s,
                    trained[n],
                )
                for n, a in candidates.items()
            ],
            self.cfg.federation.es_per_round,
            self.cfg.incentive,
            rng_for(self.cfg.seed, "selection", plan.server_round),
        )
        for node_id, a in candidates.items():
            if node_id not in selection.chosen:
                # the ES kept its commitment; the cloud chose not to use it: pay what it owes
                self.book.pass_over(plan, node_id, a, selection.reasons[node_id])
        chosen = {
            n: dataclasses.replace(candidates[n], chosen_because=selection.reasons[n])
            for n in selection.chosen
        }
        return chosen, selection.deadline_s
