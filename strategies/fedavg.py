"""LoraFedAvg: plain FedAvg of LoRA agent modules with validated replies and run records."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fed_agent.config import ExperimentConfig
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.aggregation import weighted_average
from fed_agent.outputs import RunOutputs
from fed_agent.protocol import ARRAYS, CONFIG, TrainInstruction
from fed_agent.seeding import rng_for
from strategies.records import adapter_to_record, to_config_record
from strategies.sampling import sample_nodes, wait_for_nodes
from strategies.validation import split_replies

log = logging.getLogger(__name__)


class LoraFedAvg(Strategy):
    """Invite up to ``es_per_round`` ESs, train for the full step budget, FedAvg the adapters.

    Weights are the ESs' example counts (capped by validation). The LoRA A and B matrices are
    averaged separately, which is not the average of the products B @ A; see
    ``fed_agent.modules.aggregation``.
    """

    def __init__(self, cfg: ExperimentConfig, module: AgentModule, outputs: RunOutputs) -> None:
        self.cfg = cfg
        self.module = module
        self.outputs = outputs
        self._round_started: dict[int, float] = {}

    def summary(self) -> None:
        """Log the strategy's settings."""
        fed = self.cfg.federation
        log.info(
            "LoraFedAvg: %d ES per round, %d local steps",
            fed.es_per_round,
            self.cfg.training.local_steps,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per invited ES: the global adapter and the round's instruction."""
        fed = self.cfg.federation
        self._round_started[server_round] = time.perf_counter()
        node_ids = wait_for_nodes(grid, fed.min_available_es, fed.round_timeout_s)
        invited = sample_nodes(
            node_ids, fed.es_per_round, rng_for(self.cfg.seed, "invite", server_round)
        )
        instruction = TrainInstruction(
            server_round, self.cfg.training.local_steps, self.module.base.fingerprint
        )
        return [
            Message(
                RecordDict({ARRAYS: arrays, CONFIG: to_config_record(instruction.to_dict())}),
                message_type=MessageType.TRAIN,
                dst_node_id=node_id,
            )
            for node_id in invited
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate the replies, FedAvg the accepted adapters, record the round."""
        replies = list(replies)
        accepted, rejected = split_replies(replies, self.module, self.cfg.data.samples_per_es)
        row = {
            "round": server_round,
            "invited": len(replies),
            "accepted": len(accepted),
            "rejected": len(rejected),
            "bytes_down": len(replies) * self.module.adapter_bytes,
            "bytes_up": len(accepted) * self.module.adapter_bytes,
            "round_wall_s": time.perf_counter() - self._round_started.pop(server_round),
        }
        if not accepted:
            self.outputs.record_round(row)
            log.warning("round %d: no usable reply; the global module is unchanged", server_round)
            return None, None
        weights = [r.metrics.num_examples for r in accepted]
        losses = [r.metrics.train_loss for r in accepted]
        row["train_loss"] = sum(w * v for w, v in zip(weights, losses, strict=True)) / sum(weights)
        row["train_wall_s_max"] = max(r.metrics.train_wall_s for r in accepted)
        self.outputs.record_round(row)
        aggregate = weighted_average([r.adapter for r in accepted], weights)
        return adapter_to_record(aggregate), MetricRecord(
            {"train-loss": row["train_loss"], "accepted": len(accepted)}
        )

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
