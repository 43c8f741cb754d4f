"""The ES's private side: its partition, its profiles and its data, from its node config.

In deployment a SuperNode's ``--node-config`` carries ``partition-id``, ``num-partitions`` and
optionally the ES profile (``workload-gcycles``, ``channel-gain``, ``willingness-type``,
``willingness-seed``). In simulation only the first two exist, and the profile is derived
deterministically from the partition id (``fed_agent.incentives.profiles.simulated_profiles``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass

from fed_agent.config import ExperimentConfig
from fed_agent.config.schema import DataConfig
from fed_agent.data.partition import es_examples
from fed_agent.data.tasks import Example
from fed_agent.incentives.profiles import (
    CHANNEL_GAIN,
    WILLINGNESS_SEED,
    WILLINGNESS_TYPE,
    WORKLOAD,
    PrivateProfile,
    PublicProfile,
    simulated_profiles,
)

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"


@dataclass(frozen=True)
class EdgeServerProfile:
    """What an ES knows about itself: read from its SuperNode's node config."""

    partition_id: int
    num_partitions: int

    @classmethod
    def from_node_config(cls, node_config: dict) -> EdgeServerProfile:
        """Parse ``partition-id`` and ``num-partitions``; a missing or bad value raises."""
        try:
            pid, num = int(node_config[PARTITION_ID]), int(node_config[NUM_PARTITIONS])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"node config needs integer '{PARTITION_ID}' and '{NUM_PARTITIONS}', got "
                f"{dict(node_config)}"
            ) from err
        if not 0 <= pid < num:
            raise ValueError(f"{PARTITION_ID}={pid} is outside [0, {NUM_PARTITIONS}={num})")
        return cls(pid, num)


def es_profiles(
    cfg: ExperimentConfig, node_config: dict
) -> tuple[EdgeServerProfile, PublicProfile, PrivateProfile]:
    """The ES's partition, public profile and private willingness, node config first."""
    es = EdgeServerProfile.from_node_config(node_config)
    public, private = simulated_profiles(cfg.seed, es.partition_id, cfg.contract, cfg.incentive)
    if WORKLOAD in node_config or CHANNEL_GAIN in node_config:
        public = PublicProfile(
            float(node_config.get(WORKLOAD, public.workload_gcycles)),
            float(node_config.get(CHANNEL_GAIN, public.channel_gain)),
        )
    if WILLINGNESS_TYPE in node_config:
        initial = int(node_config[WILLINGNESS_TYPE])
        if not 0 <= initial < cfg.contract.num_types:
            raise ValueError(f"{WILLINGNESS_TYPE}={initial} outside [0, {cfg.contract.num_types})")
        seed = int(node_config.get(WILLINGNESS_SEED, private.chain_seed))
        private = PrivateProfile(initial, seed)
    return es, public, private


@functools.lru_cache(maxsize=8)
def _examples_cached(data_json: str, seed: int, partition_id: int, with_images: bool):
    return es_examples(DataConfig(**json.loads(data_json)), seed, partition_id, with_images)


def local_examples(
    cfg: DataConfig, seed: int, profile: EdgeServerProfile, with_images: bool
) -> list[Example]:
    """This ES's training data, generated once per process."""
    return _examples_cached(
        json.dumps(asdict(cfg), sort_keys=True), seed, profile.partition_id, with_images
    )
