"""Flower record codecs shared by the ServerApp and the ClientApp.

The payload classes and keys live in ``fed_agent.protocol`` (framework-free); this module only
moves them in and out of Flower's ArrayRecord / ConfigRecord / MetricRecord.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord

from fed_agent.config import ExperimentConfig, load_config
from fed_agent.modules.adapter import AdapterState

EXPERIMENT_KEY = "experiment"
OVERRIDES_KEY = "overrides"


def config_from_context(context: Context) -> ExperimentConfig:
    """The typed config named by Flower's run config (only ``experiment`` and ``overrides``)."""
    run_config = context.run_config
    return load_config(
        str(run_config.get(EXPERIMENT_KEY, "default")), str(run_config.get(OVERRIDES_KEY, ""))
    )


def adapter_to_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Adapter state -> ArrayRecord (key order kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def record_to_adapter(record: ArrayRecord) -> AdapterState:
    """ArrayRecord -> adapter state."""
    return {k: array.numpy() for k, array in record.items()}


def to_config_record(values: Mapping[str, object]) -> ConfigRecord:
    """A fresh ConfigRecord (records received are never mutated)."""
    return ConfigRecord(dict(values))


def to_metric_record(values: Mapping[str, float | int]) -> MetricRecord:
    """A fresh MetricRecord."""
    return MetricRecord(dict(values))
