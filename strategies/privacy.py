"""Central differential privacy: Flower's server-side fixed clipping behind reply validation."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from fed_agent.incentives.profiles import period_of_round
from fed_agent.privacy import PrivacyConfig, epsilon_spent, offer_sampling_rate
from strategies.contract_strategy import ContractStrategy
from strategies.records import record_to_adapter

log = logging.getLogger(__name__)


class ValidatedCentralDP(DifferentialPrivacyServerSideFixedClipping):
    """Flower's central DP wrapper around the ContractStrategy, made safe for bad replies.

    Flower's wrapper skips a whole round when any reply carries an error and fails on a reply
    of the wrong shape. Here the strategy validates the replies first (it records the invalid
    ones as rejected and unpaid), the noise is scaled to the number of updates actually
    averaged, and the checkpoint holds the noised module. The strategy must average with equal
    weights (``weighting="uniform"``, the sensitivity the noise assumes) and must not commit its
    rounds itself (``commits=False``): this wrapper commits each round (checkpoint and ledger)
    after the noise. The spent budget, accounted per contract epoch at the rate of the offer
    sample, is written to the run's metrics as ``dp_epsilon`` (``fed_agent.privacy``).
    """

    def __init__(
        self, strategy: ContractStrategy, cfg: PrivacyConfig, checkpoint_dir: Path | None = None
    ) -> None:
        super().__init__(strategy, cfg.noise_multiplier, cfg.clipping_norm, num_sampled_clients=1)
        self.contract_strategy = strategy
        self.privacy = cfg
        self.epoch_releases: dict[int, int] = {}
        """Modules released per contract epoch (the unit of the offer sample)."""
        incentive = strategy.cfg.incentive
        self.sampling_rate = offer_sampling_rate(
            incentive.max_offers_per_round,
            strategy.cfg.federation.min_available_es,
            targeted=incentive.offer_targeting != "uniform",
        )
        self.checkpoint_dir = checkpoint_dir

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, clip, aggregate (inner strategy), add noise, account, checkpoint."""
        inner = self.contract_strategy
        usable = inner.validate_replies(list(replies))
        self.num_sampled_clients = max(1, len(usable))
        arrays, metrics = super().aggregate_train(server_round, usable)
        if arrays is not None:
            period_index, _ = period_of_round(
                inner.absolute_round(server_round), inner.cfg.incentive.rounds_per_period
            )
            epoch = period_index // 2
            self.epoch_releases[epoch] = self.epoch_releases.get(epoch, 0) + 1
        epsilon = epsilon_spent(
            self.privacy.noise_multiplier,
            list(self.epoch_releases.values()),
            self.sampling_rate,
            self.privacy.delta,
        )
        inner.record_round_metrics(server_round, {"dp_epsilon": epsilon})
        log.info(
            "round %d: privacy spent epsilon=%.3f (delta=%g)",
            inner.absolute_round(server_round),
            epsilon,
            self.privacy.delta,
        )
        noised = None if arrays is None else record_to_adapter(arrays)
        inner.commit_round(server_round, self.checkpoint_dir, noised)
        return arrays, metrics
