"""Evaluate an agent directory: the rows of ``fed-agent evaluate`` and of the benchmark."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fed_agent.config.load import ConfigError
from fed_agent.config.schema import ExperimentConfig
from fed_agent.data.sources import heldout_data
from fed_agent.data.tasks import Example
from fed_agent.evaluation.config import EvaluationConfig
from fed_agent.evaluation.deployment import (
    adapters_disabled,
    agent_quality,
    cloud_only,
    latency_of,
    load_timed,
    table_row,
    time_requests,
)
from fed_agent.evaluation.report import plot_table, write_table
from fed_agent.runtime import AgentRuntime

log = logging.getLogger(__name__)
TABLE, PLOT = "agent_eval.csv", "agent_eval.png"


def agent_experiment(agent_dir: Path) -> ExperimentConfig:
    """The run config saved with the agent (``config.yaml``), or the schema defaults.

    Raises
    ------
    ConfigError
        When ``config.yaml`` is no YAML or holds a key or value the schema refuses.
    """
    schema = OmegaConf.structured(ExperimentConfig)
    path = Path(agent_dir) / "config.yaml"
    try:
        if path.is_file():
            schema = OmegaConf.merge(schema, OmegaConf.load(path))
        return OmegaConf.to_object(schema)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as err:
        message = " ".join(str(err).split())
        raise ConfigError(f"{path} is not a valid run config: {message}") from err


def evaluate_runtime(
    runtime: AgentRuntime,
    examples: list[Example],
    cfg: EvaluationConfig,
    training: str,
    load_s: tuple[float, float],
    build_s: float = 0.0,
) -> list[dict]:
    """Rows for edge-agent, edge-base and cloud-only on ``examples``.

    ``load_s`` is (seconds to load the bases, seconds to load the whole agent); ``build_s``
    the one-off build of bases missing from the cache before that (a column of its own).
    """
    model = "+".join(part.module.base.name for part in runtime.modules)
    agent_q = agent_quality(runtime, examples, cfg.eval_batch_size)
    agent_t = time_requests(runtime, examples, cfg, "agent")
    with adapters_disabled(runtime):
        base_q = agent_quality(runtime, examples, cfg.eval_batch_size)
        base_t = time_requests(runtime, examples, cfg, "base")
    return [
        table_row(model, training, "edge-agent", agent_q, latency_of(agent_t, load_s[1], build_s)),
        table_row(model, "none", "edge-base", base_q, latency_of(base_t, load_s[0], build_s)),
        table_row(model, training, "cloud-only", agent_q, cloud_only(agent_t, examples, cfg)),
    ]


def evaluate_agent_dir(
    agent_dir: Path, out_dir: Path, cfg: EvaluationConfig, eval_samples: int | None = None
) -> pd.DataFrame:
    """Evaluate ``agent_dir`` on its run's held-out split; write the table and plot to ``out_dir``.

    Parameters
    ----------
    agent_dir : Path
        Written by ``export_agent`` or ``export_modules``.
    out_dir : Path
        Receives ``agent_eval.csv`` and ``agent_eval.png``.
    cfg : EvaluationConfig
        Requests, decoding length and the cloud-only network model.
    eval_samples : int, optional
        Held-out examples to score (default: the run's ``data.eval_samples``).
    """
    experiment = agent_experiment(agent_dir)
    loaded = load_timed(agent_dir, experiment.seed)
    runtime = loaded.runtime
    data = experiment.data
    if eval_samples is not None:
        data = dataclasses.replace(data, eval_samples=eval_samples)
    is_vision = any(part.module.base.is_vision for part in runtime.modules)
    examples = heldout_data(data, experiment.seed, is_vision)
    training = str(runtime.manifest.get("training", "federated"))
    rows = evaluate_runtime(
        runtime, examples, cfg, training, (loaded.base_s, loaded.agent_s), loaded.build_s
    )
    frame = write_table(rows, out_dir / TABLE)
    plot_table(frame, out_dir / PLOT, f"agent {Path(agent_dir).name}")
    return frame
