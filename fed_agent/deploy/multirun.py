"""``fed-agent run -m``: a Hydra sweep as one Flower simulation per job, each in its own folder.

The sweep folder (``<output_dir>/multirun/<run_name>-<time stamp>`` unless one is given) holds
job ``i`` in the sub-folder ``i`` (its metrics, ledger, config and agent, as a single run's)
and :data:`MANIFEST`: the experiment and, per job, its overrides, final status and wall time,
rewritten after each job. ``fed-agent summarize`` reads it. Every job's config is composed
before the first starts, so a bad value in any of them costs no run; a job that fails is
recorded and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fed_agent.config import hydra_quoted, load_config
from fed_agent.config.sweep import expand_sweep
from fed_agent.deploy.launcher import FederationRunError, check_simulation, launch_simulation
from fed_agent.evaluation.sweep_summary import MANIFEST

log = logging.getLogger(__name__)
PLACED = ("output_dir", "run_name")
"""Keys the sweep sets for each job (the job's folder); given ones place the sweep folder."""


@dataclass(frozen=True)
class SweepJob:
    """One job of a sweep and how it ended."""

    job: int
    overrides: list[str]
    status: str
    wall_s: float
    """The run's wall time as ``fed-agent run`` reports it (SuperLink start to final status)."""
    details: str = ""


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def default_sweep_dir(experiment: str, first_job: list[str]) -> Path:
    """``<output_dir>/multirun/<run_name>-<time stamp>`` of the sweep's first job."""
    cfg = load_config(experiment, first_job)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.output_dir).expanduser().resolve() / "multirun" / f"{cfg.run_name}-{stamp}"


def write_manifest(sweep_dir: Path, experiment: str, jobs: list[SweepJob]) -> None:
    """Write :data:`MANIFEST` (the experiment and every job so far)."""
    data = {"experiment": experiment, "jobs": [asdict(j) for j in jobs]}
    (sweep_dir / MANIFEST).write_text(json.dumps(data, indent=2))


def launch_multirun(
    experiment: str,
    overrides: list[str],
    timeout_s: float = 3600,
    sweep_dir: Path | None = None,
) -> tuple[Path, list[SweepJob]]:
    """Run every job of the sweep ``overrides`` one after another; the sweep folder and the jobs.

    Raises
    ------
    ConfigError
        Before any job runs, for a sweep Hydra cannot expand or a job that any check of
        :func:`fed_agent.deploy.launcher.check_simulation` refuses.
    """
    jobs = expand_sweep(overrides)
    for job in jobs:
        load_config(experiment, job)
    sweep_dir = (sweep_dir or default_sweep_dir(experiment, jobs[0])).expanduser().resolve()
    kept = [[o for o in job if _key(o) not in PLACED] for job in jobs]
    placed = [
        [f"output_dir={hydra_quoted(str(sweep_dir))}", f"run_name={index}"]
        for index in range(len(jobs))
    ]
    for index in range(len(jobs)):  # all first: a bad last job must not fail after the others
        check_simulation(experiment, [*kept[index], *placed[index]])
    sweep_dir.mkdir(parents=True, exist_ok=True)
    done: list[SweepJob] = []
    for index in range(len(jobs)):
        log.info("multirun job %d of %d: %s", index + 1, len(jobs), " ".join(kept[index]))
        start = time.perf_counter()
        try:
            outcome = launch_simulation(experiment, [*kept[index], *placed[index]], timeout_s)
            status, details, wall_s = outcome.status, "", outcome.wall_s
        except FederationRunError as err:
            status, details, wall_s = "failed", str(err), time.perf_counter() - start
            log.error("multirun job %d failed: %s", index, err)
        done.append(SweepJob(index, kept[index], status, wall_s, details))
        write_manifest(sweep_dir, experiment, done)
    return sweep_dir, done
