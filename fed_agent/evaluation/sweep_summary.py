"""The table of a multirun sweep (``fed-agent summarize``): per setting, means over seeds.

A setting is a job's overrides without its ``seed``; the jobs of one setting are its seeds.
Per setting the table has the number of seeds, the seeds, and for each of :data:`FINAL` (the
value after the last round) and :data:`TOTAL` (summed over the rounds) the mean over seeds
with its Student-t 95 % interval (``fed_agent.evaluation.intervals.mean_interval``). Jobs that
did not complete are left out and counted in ``failed_jobs``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from fed_agent.evaluation.intervals import mean_interval

MANIFEST = "multirun.json"
"""The sweep's jobs, written by ``fed_agent.deploy.multirun`` after each job."""
SUMMARY = "summary.csv"
FINAL = ("decision_accuracy", "answer_loss")
TOTAL = ("cloud_utility",)
COMPLETED = "finished:completed"


class SweepError(ValueError):
    """A folder that is not a multirun sweep, or one without a completed job."""


def read_manifest(sweep_dir: Path) -> dict:
    """The sweep's manifest: a mapping whose ``jobs`` is a list of mappings.

    Raises
    ------
    SweepError
        When there is none, or it is no JSON of that shape (one line naming the file).
    """
    path = Path(sweep_dir) / MANIFEST
    if not path.is_file():
        raise SweepError(f"{sweep_dir} is not a multirun folder: no {MANIFEST} in it")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise SweepError(f"{path} is not a multirun manifest: {err}") from err
    jobs = manifest.get("jobs") if isinstance(manifest, dict) else None
    if not isinstance(jobs, list) or not all(isinstance(job, dict) for job in jobs):
        raise SweepError(f'{path} is not a multirun manifest: expected {{"jobs": [{{...}}, ...]}}')
    return manifest


def job_rows(sweep_dir: Path) -> pd.DataFrame:
    """One row per completed job: job, setting, seed, its final and total metrics, wall time.

    Raises
    ------
    SweepError
        For a job entry or a completed job's files that cannot be read (one line naming the
        job): a summary of the other jobs would hide it.
    """
    rows = []
    for job in read_manifest(sweep_dir)["jobs"]:
        try:
            if job["status"] == COMPLETED:
                rows.append(_job_row(Path(sweep_dir), job))
        except (KeyError, TypeError, ValueError, OSError, OmegaConfBaseException, YAMLError) as err:
            problem = " ".join(str(err).split()) or type(err).__name__
            if isinstance(err, KeyError):
                problem = f"no {problem}"
            raise SweepError(f"{sweep_dir}: job {job.get('job')!r}: {problem}") from err
    return pd.DataFrame(rows)


def _job_row(sweep_dir: Path, job: dict) -> dict:
    folder = sweep_dir / str(job["job"])
    metrics = pd.read_csv(folder / "metrics.csv").sort_values("round")
    row = {
        "job": job["job"],
        "setting": " ".join(o for o in job["overrides"] if not o.startswith("seed=")),
        "seed": int(OmegaConf.load(folder / "config.yaml").seed),
        "wall_s": float(job["wall_s"]),
    }
    row |= {m: float(metrics[m].iloc[-1]) if m in metrics else math.nan for m in FINAL}
    row |= {m: float(metrics[m].sum()) if m in metrics else math.nan for m in TOTAL}
    return row


def summarize(sweep_dir: Path) -> pd.DataFrame:
    """The sweep's table (see the module docstring); one row per setting, in job order."""
    jobs = job_rows(sweep_dir)
    total = len(read_manifest(sweep_dir)["jobs"])
    if jobs.empty:
        raise SweepError(f"{sweep_dir}: none of its {total} jobs completed")
    table = []
    for setting, group in jobs.groupby("setting", sort=False):
        row = {
            "setting": setting or "(none)",
            "seeds": len(group),
            "seed_list": " ".join(str(s) for s in group.seed),
        }
        for metric in (*FINAL, *TOTAL):
            low, high = mean_interval(group[metric].to_numpy())
            row |= {metric: group[metric].mean(), f"{metric}_low": low, f"{metric}_high": high}
        row["wall_s_mean"] = group.wall_s.mean()
        table.append(row)
    summary = pd.DataFrame(table)
    summary["failed_jobs"] = total - len(jobs)
    return summary
