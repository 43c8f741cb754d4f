"""Central differential privacy: Flower's server-side fixed clipping behind reply validation."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from fed_agent.privacy import PrivacyConfig, gaussian_epsilon
from strategies.contract_strategy import ContractStrategy
from strategies.records import record_to_adapter
from strategies.validation import split_replies

log = logging.getLogger(__name__)


class ValidatedCentralDP(DifferentialPrivacyServerSideFixedClipping):
    """Flower's central DP wrapper around the ContractStrategy, made safe for bad replies.

    Flower's wrapper skips a whole round when any reply carries an error and fails on a reply
    of the wrong shape. Here structurally invalid replies are removed first (the strategy
    records them as rejected and unpaid), the noise is scaled to the number of updates
    actually averaged, the strategy averages them with equal weights (the sensitivity the
    noise assumes), and the checkpoint holds the noised module. The spent budget is written to
    the run's metrics as ``dp_epsilon`` (``fed_agent.privacy``).
    """

    def __init__(self, strategy: ContractStrategy, cfg: PrivacyConfig) -> None:
        super().__init__(strategy, cfg.noise_multiplier, cfg.clipping_norm, num_sampled_clients=1)
        self.privacy = cfg
        self.releases = 0
        self.checkpoint_dir: Path | None = strategy.checkpoint_dir
        strategy.checkpoint_dir = None  # checkpoint after the noise, below
        strategy.uniform_weights = True

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, clip, aggregate (inner strategy), add noise, account, checkpoint."""
        inner: ContractStrategy = self.strategy
        replies = list(replies)
        valid, rejected = split_replies(replies, inner.module, inner.cfg.data.samples_per_es)
        inner.pre_rejected = rejected
        ok = {r.node_id for r in valid}
        usable = [m for m in replies if int(m.metadata.src_node_id) in ok]
        self.num_sampled_clients = max(1, len(usable))
        arrays, metrics = super().aggregate_train(server_round, usable)
        absolute = server_round + inner.round_offset
        if arrays is not None:
            self.releases += 1
            inner.latest_state = record_to_adapter(arrays)
        epsilon = gaussian_epsilon(self.privacy.noise_multiplier, self.releases, self.privacy.delta)
        inner.outputs.record_round({"round": absolute, "dp_epsilon": epsilon})
        log.info("round %d: privacy spent epsilon=%.3f (delta=%g)", absolute, epsilon,
                 self.privacy.delta)  # fmt: skip
        if self.checkpoint_dir is not None:
            inner.checkpoint(absolute, self.checkpoint_dir)
        return arrays, metrics
