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
    """The sweep's manifest; raises :class:`SweepError` when there is none."""
    path = Path(sweep_dir) / MANIFEST
    if not path.is_file():
        raise SweepError(f"{sweep_dir} is not a multirun folder: no {MANIFEST} in it")
    return json.loads(path.read_text())


def job_rows(sweep_dir: Path) -> pd.DataFrame:
    """One row per completed job: job, setting, seed, its final and total metrics, wall time."""
    rows = []
    for job in read_manifest(sweep_dir)["jobs"]:
        if job["status"] != COMPLETED:
            continue
        folder = Path(sweep_dir) / str(job["job"])
        metrics = pd.read_csv(folder / "metrics.csv").sort_values("round")
        row = {
            "job": job["job"],
            "setting": " ".join(o for o in job["overrides"] if not o.startswith("seed=")),
            "seed": int(OmegaConf.load(folder / "config.yaml").seed),
            "wall_s": job["wall_s"],
        }
        row |= {m: float(metrics[m].iloc[-1]) if m in metrics else math.nan for m in FINAL}
        row |= {m: float(metrics[m].sum()) if m in metrics else math.nan for m in TOTAL}
        rows.append(row)
    return pd.DataFrame(rows)


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
