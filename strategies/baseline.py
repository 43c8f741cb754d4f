"""``incentive=none``: Flower's own FedAvg over the same ESs, the no-contract baseline.

No offers, no ledger, no payments: every sampled ES gets a plain TRAIN message (the module and
FedAvg's own config) and trains ``training.local_steps`` (``clients.client_app``); the replies
are averaged by Flower's ``FedAvg`` weighted by their example counts. Quality is measured on
the cloud's held-out split as in a contract run (no federated evaluation round, which would
be one more ClientApp process per ES in a deployment). The wait for enough ESs is bounded
like the contract strategy's (Flower's own sampling waits forever).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fed_agent.config import ExperimentConfig
from fed_agent.outputs import RunOutputs
from strategies.sampling import wait_for_nodes

log = logging.getLogger(__name__)
NO_CONTRACT = "none"
"""The ``incentive.policy`` that runs this baseline."""


class RecordedFedAvg(FedAvg):
    """Flower's FedAvg sampling up to ``federation.es_per_round`` ESs a round; each round's
    participants (replies without an error) and wall time go to the run's metrics."""

    def __init__(self, cfg: ExperimentConfig, outputs: RunOutputs) -> None:
        fed = cfg.federation
        super().__init__(
            fraction_train=fed.es_per_round / fed.num_es,
            fraction_evaluate=0.0,
            min_train_nodes=min(fed.es_per_round, fed.min_available_es),
            min_evaluate_nodes=0,
            min_available_nodes=fed.min_available_es,
        )
        self.cfg, self.outputs = cfg, outputs
        self._round_started = 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Wait (bounded) for enough ESs, then FedAvg's own sampling and messages."""
        self._round_started = time.perf_counter()
        fed = self.cfg.federation
        wait_for_nodes(grid, fed.min_available_es, fed.round_timeout_s)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg's aggregate; the round's participation recorded."""
        replies = list(replies)
        answered = [r for r in replies if not r.has_error()]
        arrays, metrics = super().aggregate_train(server_round, replies)
        self.outputs.record_round(
            {
                "round": server_round,
                "participants": len(answered) if arrays is not None else 0,
                "failed_replies": len(replies) - len(answered),
                "payments": 0.0,
                "round_wall_s": time.perf_counter() - self._round_started,
            }
        )
        return arrays, metrics
