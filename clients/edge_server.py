"""One edge server (ES), framework-free: everything it knows, decides and computes.

It reads its partition (``partition-id``, ``num-partitions``) and its profile from its
SuperNode's node config (``fed_agent.incentives.profiles``: public facts and private
willingness). In simulation only the partition exists, and the profile is derived from the
partition id and the seed. The willingness type never leaves this module: an offer is answered
with an item index (the ES's best response, ``es_choice``), and a training instruction with the
trained adapter and the allow-listed metrics (``TrainReply``), none of which depends on the
type; the reply echoes the instruction's round and nonce.

The answer to a query (public facts, an offer) needs no model: the torch stack (torch,
transformers, peft; seconds to import) is imported only by the methods that train or evaluate,
because in a deployment every message starts a fresh ClientApp process.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from fed_agent.config import ExperimentConfig
from fed_agent.config.schema import DataConfig
from fed_agent.contracts import DynamicContract, Market, es_choice, period2_choice
from fed_agent.contracts.utility import es_period_utility
from fed_agent.data.files import DataFileError, find_problems
from fed_agent.data.partition import es_examples
from fed_agent.data.sources import es_data, es_folder
from fed_agent.data.tasks import Example
from fed_agent.es_keys import (
    PrivateKey,
    load_identity_key,
    public_key_text,
    sign,
    simulated_identity_key,
)
from fed_agent.incentives.profiles import (
    CHANNEL_GAIN,
    WILLINGNESS_SEED,
    WILLINGNESS_TYPE,
    WORKLOAD,
    PublicFacts,
    Willingness,
    es_market,
    period_of_round,
    simulated_profiles,
)
from fed_agent.protocol import (
    DECLINE,
    DEVICE,
    ES_IDENTITY,
    ES_PROOF,
    ES_PUBLIC_KEY,
    IDENTITY_KEY,
    NUM_PARTITIONS,
    PARTITION_ID,
    AdapterState,
    Offer,
    PlainTraining,
    TrainInstruction,
    TrainOffer,
    TrainReply,
    es_identity,
)
from fed_agent.seeding import derive_seed

log = logging.getLogger(__name__)

ORACLE_TOLERANCE = 1e-9
"""Complete information: the ES takes its own type's item unless it loses more than this."""


def _partition(node_config: Mapping[str, object]) -> tuple[int, int]:
    """``partition-id`` and ``num-partitions``; a missing or bad value raises."""
    try:
        pid, num = int(node_config[PARTITION_ID]), int(node_config[NUM_PARTITIONS])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"node config needs integer '{PARTITION_ID}' and '{NUM_PARTITIONS}', got "
            f"{dict(node_config)}"
        ) from err
    if not 0 <= pid < num:
        raise ValueError(f"{PARTITION_ID}={pid} is outside [0, {NUM_PARTITIONS}={num})")
    return pid, num


@dataclass(frozen=True)
class EdgeServer:
    """An ES: its data shard, its profile and the experiment's settings."""

    cfg: ExperimentConfig
    partition_id: int
    num_partitions: int
    facts: PublicFacts
    willingness: Willingness
    data_folder: str = ""
    """``data.source=files``: the ES's own data folder (node config ``data-path``, else
    ``<data.path>/<partition-id>``); it never leaves the ES."""
    identity_key_file: str = ""
    """The file of the ES's identity key (node config ``identity-key``); empty: the simulated
    key derived from the seed and the partition (``fed_agent.es_keys``)."""
    keep_modules: ClassVar[bool] = False
    """Keep the last built module for later messages: set by a long-lived process (the warm
    trainer, ``clients/warm_trainer.py``); a ClientApp process answers one message."""

    @classmethod
    def from_node_config(
        cls, cfg: ExperimentConfig, node_config: Mapping[str, object]
    ) -> EdgeServer:
        """The ES a SuperNode's node config describes; profile keys override the simulated ones."""
        pid, num = _partition(node_config)
        if DEVICE in node_config:  # this node's own device (the cloud keeps its own)
            model = replace(cfg.model, device=str(node_config[DEVICE]))
            cfg = replace(cfg, model=model)
        facts, willingness = simulated_profiles(cfg.seed, pid, cfg.market, cfg.incentive)
        if WORKLOAD in node_config or CHANNEL_GAIN in node_config:
            facts = PublicFacts(
                float(node_config.get(WORKLOAD, facts.workload_gcycles)),  # type: ignore[arg-type]
                float(node_config.get(CHANNEL_GAIN, facts.channel_gain)),  # type: ignore[arg-type]
            )
        if WILLINGNESS_TYPE in node_config:
            initial = int(node_config[WILLINGNESS_TYPE])  # type: ignore[arg-type]
            if not 0 <= initial < cfg.market.num_types:
                raise ValueError(
                    f"{WILLINGNESS_TYPE}={initial} outside [0, {cfg.market.num_types})"
                )
            seed = int(node_config.get(WILLINGNESS_SEED, willingness.chain_seed))  # type: ignore[arg-type]
            willingness = Willingness(initial, seed)
        folder = es_folder(cfg.data, pid, node_config) if cfg.data.source == "files" else ""
        key_file = str(node_config.get(IDENTITY_KEY, ""))
        return cls(cfg, pid, num, facts, willingness, str(folder), key_file)

    @property
    def data_problem(self) -> str | None:
        """Why this ES's own data cannot be trained on (None when it can, or is synthetic): the
        first problem, with the file's name and line but not the folder's path."""
        if self.cfg.data.source != "files":
            return None
        return _data_problem(self.data_folder)

    def identity_key(self) -> PrivateKey:
        """The ES's identity key: its key file's, else the simulated one. A key file that is
        missing or unusable raises ``fed_agent.es_keys.IdentityKeyError`` (one line)."""
        if self.identity_key_file:
            return load_identity_key(self.identity_key_file)
        return simulated_identity_key(self.cfg.seed, self.partition_id)

    def public_facts(self, challenge: str = "") -> dict[str, float | str]:
        """The public-facts reply: workload, uplink gain, the ES's stable identity (its data
        shard) and the proof that it holds the identity's key: the public key and a signature
        over the identity and the cloud's ``challenge``, by which a resumed cloud finds this
        ES's engagement and no other node can take it."""
        identity = es_identity(self.partition_id, self.num_partitions)
        key = self.identity_key()
        return {
            **self.facts.to_dict(),
            ES_IDENTITY: identity,
            ES_PUBLIC_KEY: public_key_text(key),
            ES_PROOF: sign(key, identity, challenge),
        }

    def market(self, module_bytes: float | None = None) -> Market:
        """This ES's market as it sees it (no belief: it knows its own type)."""
        return es_market(self.cfg.market, self.facts, module_bytes, None)

    def type_in_round(self, server_round: int, market: Market) -> int:
        """The ES's private willingness type in ``server_round``."""
        period_index, _ = period_of_round(server_round, self.cfg.incentive.rounds_per_period)
        return self.willingness.type_at(market, period_index)

    def answer_offer(self, offer: Offer) -> int:
        """The item the ES takes from the offered menu, or DECLINE.

        Self-selection by ``es_choice`` (period 1) or ``period2_choice`` (period 2, after its
        period-1 report). Under complete information (``offer.oracle``) the cloud knows the
        type: the ES can only take its own type's item or decline.
        """
        if self.data_problem is not None:  # no usable data: no work it could deliver
            log.warning(
                "ES %d declines: its data is unusable: %s", self.partition_id, self.data_problem
            )
            return DECLINE
        k = len(offer.f1)
        contract = DynamicContract.from_flat(
            np.array([*offer.f1, *offer.f2]), np.array([*offer.r1, *offer.r2]), k
        )
        market = self.market().replace(participation=offer.participation)
        true_type = self.type_in_round(offer.server_round, market)
        report = None if offer.report == DECLINE else offer.report
        if offer.oracle:
            f, reward = contract.terms(offer.period, true_type, report)
            utility = es_period_utility(reward, f, market.types[true_type], market)
            item = true_type if utility >= -ORACLE_TOLERANCE else None
        elif offer.period == 1:
            item = es_choice(contract, market, true_type)
        else:
            # ex ante: walking away forfeits the held period-1 pay, nothing more
            forfeit = offer.held if market.participation == "ex_ante" else None
            item = period2_choice(contract, market, offer.report, true_type, forfeit=forfeit)
        return DECLINE if item is None else item

    def examples(self, with_images: bool) -> list[Example]:
        """This ES's training data, generated (or read from its folder) once per process."""
        if self.cfg.data.source != "synthetic":
            size = self.cfg.data.image_size if with_images else None
            return es_data(
                self.cfg.data, self.cfg.seed, self.partition_id, size, Path(self.data_folder)
            )
        return _examples_cached(
            json.dumps(asdict(self.cfg.data), sort_keys=True),
            self.cfg.seed,
            self.partition_id,
            with_images,
        )

    def respond(
        self, request: TrainInstruction | TrainOffer | PlainTraining, adapter: AdapterState
    ) -> tuple[AdapterState | None, TrainReply]:
        """Answer a TRAIN message: the trained adapter (None when declined) and the metrics.

        An instruction is followed as given; an offer is answered first (the chosen item's
        work is done at once; a decline or the exit item does none); plain training (no contract) does the
        configured ``training.local_steps``.
        """
        if isinstance(request, TrainOffer):
            item = self.answer_offer(request.offer)
            if item == DECLINE or request.offer.is_exit(item):  # no work: a reply without arrays
                return None, TrainReply(
                    0, float("nan"), 0, 0.0, request.offer.server_round, request.nonce, item
                )
            return self.train(request.instruction(item), adapter)
        if isinstance(request, PlainTraining):
            if request.ignored_keys:
                log.info(
                    "ES %d: plain TRAIN message; config keys not used: %s",
                    self.partition_id,
                    ", ".join(request.ignored_keys),
                )
            return self._train(
                request.server_round, self.cfg.training.local_steps, adapter, None, 0, DECLINE
            )
        return self.train(request, adapter)

    def train(
        self, instruction: TrainInstruction, adapter: AdapterState
    ) -> tuple[AdapterState, TrainReply]:
        """Train the received module for the instructed steps; the adapter and the metrics."""
        return self._train(
            instruction.server_round,
            instruction.local_steps,
            adapter,
            instruction.base_fingerprint,
            instruction.nonce,
            instruction.item,
        )

    def _train(
        self,
        server_round: int,
        steps: int,
        adapter: AdapterState,
        base_fingerprint: str | None,
        nonce: int,
        item: int,
    ) -> tuple[AdapterState, TrainReply]:
        from fed_agent.modules.training import train_locally  # the torch stack: lazily

        module = self._module(base_fingerprint)
        module.load_adapter(adapter)
        examples = self.examples(module.base.is_vision)
        seed = derive_seed(self.cfg.seed, "local-training", self.partition_id, server_round)
        report = train_locally(module, examples, self.cfg.training, steps, seed)
        # nothing here depends on the private type: the cloud derives the modelled latency
        # and its estimate of the ES's utility from the contract and the public facts
        reply = TrainReply(
            num_examples=len(examples),
            train_loss=report.mean_loss,
            train_steps=report.steps,
            train_wall_s=report.wall_s,
            server_round=server_round,
            nonce=nonce,
            item=item,
        )
        return module.adapter_state(), reply

    def evaluate(self, adapter: AdapterState) -> dict[str, float | int]:
        """Quality of ``adapter`` on this ES's local split (Flower's federated evaluation)."""
        from fed_agent.evaluation.quality import evaluate_quality  # the torch stack: lazily

        module = self._module(None)
        module.load_adapter(adapter)
        examples = self.examples(module.base.is_vision)
        quality = evaluate_quality(module, examples, self.cfg.training.eval_batch_size)
        return {
            "num-examples": len(examples),
            "decision-accuracy": float(quality.decision_accuracy),
            "answer-loss": float(quality.answer_loss),
        }

    def _module(self, base_fingerprint: str | None):
        """The agent module; with a fingerprint, refuse a base that differs from the cloud's."""
        from fed_agent.modules.adapter import AdapterError, agent_module  # the torch stack

        if not self.keep_modules:
            module = agent_module(self.cfg.model, self.cfg.seed)
        else:  # one base at a time: a new config replaces the old one
            key = (json.dumps(asdict(self.cfg.model), sort_keys=True), self.cfg.seed)
            if key not in _KEPT_MODULES:
                _KEPT_MODULES.clear()
                _KEPT_MODULES[key] = agent_module(self.cfg.model, self.cfg.seed)
            module = _KEPT_MODULES[key]
        if base_fingerprint is not None and module.base.fingerprint != base_fingerprint:
            raise AdapterError(
                f"ES {self.partition_id}: base model {module.base.fingerprint[:12]} differs from "
                f"the cloud's {base_fingerprint[:12]}; same model config and seed needed"
            )
        return module


_KEPT_MODULES: dict[tuple[str, int], object] = {}
"""The module kept by a long-lived process (``EdgeServer.keep_modules``)."""


@functools.lru_cache(maxsize=8)
def _data_problem(folder: str) -> str | None:
    """The first problem of a data folder (checked once per process), without its path."""
    try:
        _, problems = find_problems(Path(folder), limit=1)
    except OSError as err:
        return f"data folder unreadable ({err.strerror})"
    if not problems:
        return None
    problem: DataFileError = problems[0]
    return problem.local_reason or "no such data folder"


@functools.lru_cache(maxsize=8)
def _examples_cached(data_json: str, seed: int, partition_id: int, with_images: bool):
    return es_examples(DataConfig(**json.loads(data_json)), seed, partition_id, with_images)
