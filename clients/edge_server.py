"""The ES's private side: which partition it holds (from its node config) and its data."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass

from fed_agent.config.schema import DataConfig
from fed_agent.data.partition import es_examples
from fed_agent.data.tasks import Example

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
