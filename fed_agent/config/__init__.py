"""Typed configuration: dataclass schemas and the Hydra loader."""

from fed_agent.config.load import ConfigError, experiment_names, load_config, to_yaml
from fed_agent.config.schema import (
    AgentConfig,
    DataConfig,
    ExperimentConfig,
    FederationConfig,
    ModelConfig,
    TrainingConfig,
)

__all__ = [
    "AgentConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "FederationConfig",
    "ModelConfig",
    "TrainingConfig",
    "experiment_names",
    "load_config",
    "to_yaml",
]
