"""Wall time, messages and ClientApp process starts per round of a real loopback deployment.

Brings up the project's own TLS + SuperNode-auth federation on 127.0.0.1
(``fed_agent.deploy.local``: a SuperLink and ``--num-nodes`` SuperNodes), runs the smoke
experiment for ``--rounds`` rounds and watches it from outside, every ``POLL_S`` seconds:

- a round ends when its row of ``metrics.csv`` gets its held-out quality (written after the
  round's aggregation and evaluation); its wall time runs from the end of the round before
  (round 1: from the first message any SuperNode receives, so the ServerApp's start-up and
  the initial evaluation are not counted);
- messages are the ``Receiving: <type> message`` lines the SuperNodes log;
- process starts are the ``flwr-clientapp`` processes (one per message in Flower 1.42's
  deployment engine) that appear under the SuperNodes, with their lifetimes;
- CPU seconds are those the whole federation (SuperLink, SuperNodes and every process they
  started, exited ones included once reaped) used during the round: on a shared box the wall
  time follows the load, the CPU work much less.

The timeline of every round (first receive, waves, process lifetimes) is printed, the per-round
rows are written to ``benchmarks/results/deploy_rounds.csv`` under ``--mode`` (rows of that
mode are replaced, others kept) with the 1-minute load average at the end of each round: the
box is shared, so read wall times next to it.

Run:  .venv/bin/python benchmarks/deploy_rounds.py --mode after
      .venv/bin/python benchmarks/deploy_rounds.py --mode warm --warm-trainers
      .venv/bin/python benchmarks/deploy_rounds.py --mode before --app-dir /tmp/old-checkout
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

from fed_agent.deploy.flwr_cli import wait_finished
from fed_agent.deploy.launcher import PROJECT_ROOT
from fed_agent.deploy.local import CONNECTION, local_federation, submit_experiment

RESULTS = Path(__file__).resolve().parent / "results" / "deploy_rounds.csv"
POLL_S = 0.1
CLIENTAPP = "flwr-clientapp"
RECEIVING = re.compile(r"Receiving: (\w+) message")
SENDING = re.compile(r"Sending: (\w+) message")


@dataclass
class Watch:
    """Everything seen so far: events ``(t, node, what)`` and round completion times."""

    started: float = field(default_factory=time.perf_counter)
    events: list[tuple[float, int, str]] = field(default_factory=list)
    round_done: dict[int, float] = field(default_factory=dict)
    round_load: dict[int, float] = field(default_factory=dict)
    cpu: list[tuple[float, float]] = field(default_factory=list)
    """(t, CPU seconds the federation's processes have used so far)."""
    _log_offsets: dict[int, int] = field(default_factory=dict)
    _live: dict[int, tuple[int, float]] = field(default_factory=dict)

    def now(self) -> float:
        return time.perf_counter() - self.started

    def poll(self, federation, metrics_csv: Path) -> None:
        """Read new SuperNode log lines, ClientApp processes and finished rounds."""
        t = self.now()
        self.cpu.append(
            (
                t,
                _tree_cpu_s(
                    [
                        federation.superlink,
                        *(n.process for n in federation.supernodes),
                        *(n.trainer for n in federation.supernodes if n.trainer is not None),
                    ]
                ),
            )
        )
        for index, node in enumerate(federation.supernodes):
            text = node.console.read_text(errors="replace")
            new, self._log_offsets[index] = text[self._log_offsets.get(index, 0) :], len(text)
            for line in new.splitlines():
                if match := RECEIVING.search(line):
                    self.events.append((t, index, f"recv {match.group(1)}"))
                elif match := SENDING.search(line):
                    self.events.append((t, index, f"send {match.group(1)}"))
            seen = set()
            for child in _children(node.process.pid):
                if CLIENTAPP in " ".join(_cmdline(child)):
                    seen.add(child.pid)
                    if child.pid not in self._live:
                        self._live[child.pid] = (index, t)
                        self.events.append((t, index, "process start"))
            for pid, (owner, since) in list(self._live.items()):
                if owner == index and pid not in seen:
                    del self._live[pid]
                    self.events.append((t, index, f"process end ({t - since:.1f} s)"))
        if metrics_csv.exists():
            try:
                rows = pd.read_csv(metrics_csv)
            except (pd.errors.EmptyDataError, pd.errors.ParserError):
                return
            if "decision_accuracy" in rows:
                for r in rows.loc[rows["decision_accuracy"].notna() & (rows["round"] > 0), "round"]:
                    if int(r) not in self.round_done:
                        self.round_done[int(r)] = t
                        self.round_load[int(r)] = os.getloadavg()[0]


def _tree_cpu_s(roots) -> float:
    """CPU seconds of ``roots`` and all their descendants, reaped children included."""
    total = 0.0
    for root in roots:
        for process in [psutil.Process(root.pid), *_children(root.pid)]:
            try:
                c = process.cpu_times()
            except psutil.Error:
                continue
            total += c.user + c.system + c.children_user + c.children_system
    return total


def _cpu_at(watch: Watch, t: float) -> float:
    """The federation's CPU seconds at the last sample not after ``t``."""
    return max((cpu for ts, cpu in watch.cpu if ts <= t), default=0.0)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def measure(
    rounds: int,
    num_nodes: int,
    timeout_s: float,
    app_dir: Path,
    extra: list[str],
    warm_trainers: bool = False,
) -> Watch:
    """Run the smoke experiment on a fresh loopback federation; return what was seen.

    ``app_dir`` is the Flower app submitted (a checkout of another commit measures that
    commit's apps: the bundle carries the whole project). ``warm_trainers``: each SuperNode
    gets a warm trainer (its CPU is counted with the federation's).
    """
    with tempfile.TemporaryDirectory(prefix="deploy-rounds-") as tmp:
        tmp_path = Path(tmp)
        with local_federation(
            num_nodes, tmp_path / "federation", warm_trainers=warm_trainers
        ) as federation:
            overrides = [
                f"output_dir={tmp_path / 'out'}",
                f"federation.num_rounds={rounds}",
                f"federation.num_es={num_nodes}",
                f"federation.es_per_round={num_nodes}",
                f"federation.min_available_es={num_nodes}",
                *extra,
            ]
            watch = Watch()
            run = submit_experiment(federation.env, "smoke", overrides, app_dir=app_dir)
            metrics_csv = run.output_dir / "metrics.csv"
            stop = threading.Event()

            def observe() -> None:  # its own thread: a slow `flwr list` must not stall it
                while not stop.is_set():
                    watch.poll(federation, metrics_csv)
                    time.sleep(POLL_S)

            observer = threading.Thread(target=observe, daemon=True)
            observer.start()
            try:
                status, details = wait_finished(
                    run.run_id, CONNECTION, federation.env, timeout_s, 2.0
                )
            finally:
                stop.set()
                observer.join()
            watch.poll(federation, metrics_csv)
            print(f"run {run.run_id}: {status} {details}")
    return watch


def per_round(watch: Watch, mode: str) -> pd.DataFrame:
    """One row per finished round: wall time, messages received, ClientApp processes started."""
    first = min((t for t, _, what in watch.events if what.startswith("recv")), default=0.0)
    rows, begin = [], first
    for r in sorted(watch.round_done):
        end = watch.round_done[r]
        window = [e for e in watch.events if begin < e[0] <= end or (r == 1 and e[0] == begin)]
        rows.append(
            {
                "mode": mode,
                "round": r,
                "wall_s": round(end - begin, 1),
                "messages": sum(what.startswith("recv") for _, _, what in window),
                "process_starts": sum(what == "process start" for _, _, what in window),
                "cpu_s": round(_cpu_at(watch, end) - _cpu_at(watch, begin), 1),
                "load_1min": round(watch.round_load[r], 2),
            }
        )
        print(f"--- round {r}: {rows[-1]}")
        for t, node, what in window:
            print(f"  +{t - begin:6.1f} s  ES {node}: {what}")
        begin = end
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", required=True, help="label of these rows, e.g. before/after")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-nodes", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides"
    )
    parser.add_argument(
        "--app-dir", type=Path, default=PROJECT_ROOT, help="the Flower app to run (a checkout)"
    )
    parser.add_argument(
        "--warm-trainers",
        action="store_true",
        help="a warm trainer beside every SuperNode (clients/warm_trainer.py)",
    )
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    table = per_round(
        measure(
            args.rounds,
            args.num_nodes,
            args.timeout_s,
            args.app_dir.resolve(),
            args.set,
            args.warm_trainers,
        ),
        args.mode,
    )
    if args.out.exists():
        kept = pd.read_csv(args.out)
        table = pd.concat([kept[kept["mode"] != args.mode], table], ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
