"""Helpers of the deployment-engine tests: loopback only, every process stopped by PID."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil

CLIENTAPP = "flwr-clientapp"


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s=0.5) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(poll_s)


def running_clientapp(pid: int) -> bool:
    """Whether the SuperNode ``pid`` is running a ClientApp now (i.e. it is mid-round)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    return any(CLIENTAPP in " ".join(_cmdline(c)) for c in children)


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process we started and its descendants (a crash, not a shutdown)."""
    root = psutil.Process(pid)
    victims = [*root.children(recursive=True), root]
    for process in victims:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)
    return [p.pid for p in victims]


def all_gone(pids: list[int]) -> bool:
    """No process of ``pids`` is alive (zombies waiting to be reaped count as gone)."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def round_metrics(run_dir: Path) -> pd.DataFrame:
    """The run's per-round metrics table, indexed by round."""
    return pd.read_csv(run_dir / "metrics.csv").set_index("round")
