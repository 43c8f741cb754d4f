"""Typed configuration: dataclass schemas and the Hydra loader."""

from fed_agent.config.load import (
    ConfigError,
    config_from_run_config,
    experiment_names,
    hydra_quoted,
    load_config,
    run_config_file,
    to_yaml,
)
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
    "config_from_run_config",
    "experiment_names",
    "hydra_quoted",
    "load_config",
    "run_config_file",
    "to_yaml",
]
