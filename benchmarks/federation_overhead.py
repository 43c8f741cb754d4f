"""Framework overhead, bytes on the wire and memory of the Flower simulation.

Measures, in one run on this machine:

(a) seconds per round of the Flower simulation (``fed-agent run``) against a plain PyTorch
    loop that does the same local training for the same ESs with the same parallelism, at 20
    ESs, with the default run's model and step budget (every ES accepts and trains the full
    budget: the flat-fee policy with f = f_max and a fee above every cost). The simulation runs
    floor(CPUs / ``federation.client_cpus``) Ray actors, each with ``client_cpus`` threads; the
    plain loop runs as many worker processes with as many torch threads each, so the ratio
    measures Flower's cost, not a difference in the cores used;
(b) bytes sent per round (adapters down and up) against the full model's bytes;
(c) peak memory of the whole process tree with 10 and 100 virtual ESs at the same number of
    sampled ESs (10).

Round times are medians over rounds 2.. (round 1 includes starting the Ray actors and the
first, slow training steps of each process).

Run:  .venv/bin/python benchmarks/federation_overhead.py [--client-cpus 1] [--parts timing]
Out:  benchmarks/results/federation_overhead.csv
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch

from fed_agent.config import load_config
from fed_agent.data.partition import es_examples
from fed_agent.deploy.launcher import launch_simulation
from fed_agent.modules.adapter import agent_module
from fed_agent.modules.training import train_locally
from fed_agent.screening.aggregation import weighted_average
from fed_agent.seeding import derive_seed

RESULTS = Path(__file__).resolve().parent / "results" / "federation_overhead.csv"
MEMORY_STEPS = 2
"""Memory does not depend on the step budget; few steps keep the memory runs short."""


class PeakMemory:
    """Samples the summed RSS of this process and all its descendants every ``period_s``."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s, self.peak_bytes = period_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.period_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def all_train_overrides(num_es: int, rounds: int, sampled: int, steps: int) -> list[str]:
    """Every offered ES accepts a flat fee for the full effort; ``sampled`` are offered."""
    return [
        f"training.local_steps={steps}",
        f"federation.num_es={num_es}",
        f"federation.num_rounds={rounds}",
        f"federation.es_per_round={sampled}",
        f"incentive.max_offers_per_round={sampled}",
        "incentive=fedavg_flat_fee",
        "incentive.flat_fee=1000",
        "incentive.flat_fee_f_ghz=5.0",
    ]


def flower_run(
    num_es: int, rounds: int, sampled: int, steps: int, out: Path, client_cpus: float = 2.0
) -> dict:
    overrides = [
        *all_train_overrides(num_es, rounds, sampled, steps),
        f"federation.client_cpus={client_cpus:g}",
        f"output_dir={out}",
        f"run_name=overhead-{num_es}",
    ]
    with PeakMemory() as memory:
        outcome = launch_simulation("default", overrides)
    metrics = pd.read_csv(outcome.output_dir / "metrics.csv")
    rounds_df = metrics[metrics["round"] >= 1]
    later = rounds_df[rounds_df["round"] >= 2]
    return {
        "round_time_s_median": float(later["round_wall_s"].median()),
        "round1_time_s": float(rounds_df["round_wall_s"].iloc[0]),
        "bytes_per_round": float((later["bytes_down"] + later["bytes_up"]).median()),
        "peak_rss_mb": memory.peak_bytes / 2**20,
        "participants_median": float(later["participants"].median()),
        "workers": parallelism(client_cpus)[0],
        "threads_per_worker": parallelism(client_cpus)[1],
    }


def parallelism(client_cpus: float) -> tuple[int, int]:
    """(worker processes, torch threads each) of the simulation: Flower starts
    floor(CPUs / client_cpus) Ray actors, and Ray gives each OMP_NUM_THREADS = its CPUs."""
    cpus = os.cpu_count() or 1
    return max(1, int(cpus // client_cpus)), max(1, int(client_cpus))


_WORKER: dict = {}


def _start_worker(overrides: list[str], threads: int) -> None:
    """A plain worker process: its own module and data, like a Ray actor's ClientApp."""
    torch.set_num_threads(threads)
    cfg = load_config("default", overrides)
    _WORKER.update(cfg=cfg, module=agent_module(cfg.model, cfg.seed), data={})


def _train_es(task: tuple[int, int, dict]) -> tuple[dict, int]:
    """One ES's local training of one round in a worker: its adapter and its steps."""
    pid, server_round, global_state = task
    cfg, module, data = _WORKER["cfg"], _WORKER["module"], _WORKER["data"]
    if pid not in data:
        data[pid] = es_examples(cfg.data, cfg.seed, pid)
    module.load_adapter(global_state)
    seed = derive_seed(cfg.seed, "local-training", pid, server_round)
    report = train_locally(module, data[pid], cfg.training, cfg.training.local_steps, seed)
    return module.adapter_state(), report.steps


def plain_loop(num_es: int, rounds: int, steps: int, client_cpus: float) -> dict:
    """The same local training and aggregation without a framework, on as many worker
    processes (and threads each) as the simulation has Ray actors (:func:`parallelism`)."""
    overrides = [
        *all_train_overrides(num_es, rounds, num_es, steps),
        f"federation.client_cpus={client_cpus:g}",
    ]
    cfg = load_config("default", overrides)
    workers, threads = parallelism(client_cpus)
    global_state = agent_module(cfg.model, cfg.seed).initial_state
    times = []
    context = multiprocessing.get_context("spawn")
    with (
        PeakMemory() as memory,
        context.Pool(workers, initializer=_start_worker, initargs=(overrides, threads)) as pool,
    ):
        for server_round in range(1, rounds + 1):
            start = time.perf_counter()
            tasks = [(pid, server_round, global_state) for pid in range(num_es)]
            results = pool.map(_train_es, tasks, chunksize=1)
            global_state = weighted_average([r[0] for r in results], [r[1] for r in results])
            times.append(time.perf_counter() - start)
    return {
        "round_time_s_median": float(np.median(times[1:])),
        "round1_time_s": times[0],
        "bytes_per_round": 0.0,
        "peak_rss_mb": memory.peak_bytes / 2**20,
        "participants_median": float(num_es),
        "workers": workers,
        "threads_per_worker": threads,
    }


def sizes_of_default_model() -> dict[str, int]:
    """Bytes of one adapter and of the full base model of the default run."""
    cfg = load_config("default")
    module = agent_module(cfg.model, cfg.seed)
    return {"adapter_bytes": module.adapter_bytes, "full_model_bytes": module.base.num_bytes}


def _previous_rows(keep) -> list[dict]:
    """Rows of the committed table whose mode ``keep`` accepts (none if there is no table)."""
    if not RESULTS.exists():
        return []
    previous = pd.read_csv(RESULTS)
    return previous[previous["mode"].map(keep)].to_dict("records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--memory-rounds", type=int, default=2)
    parser.add_argument(
        "--parts", nargs="+", default=["timing", "memory"], choices=["timing", "memory"]
    )
    parser.add_argument(
        "--local-steps", type=int, default=None, help="default: the default run's step budget"
    )
    parser.add_argument(
        "--client-cpus",
        type=float,
        default=None,
        help="CPUs per ClientApp in the timing runs (default: federation.client_cpus)",
    )
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="fed-agent-overhead-"))
    steps = args.local_steps or load_config("default").training.local_steps
    cpus = args.client_cpus or load_config("default").federation.client_cpus
    if "timing" in args.parts:
        plain = plain_loop(20, args.rounds, steps, cpus)
        rows = [
            {"num_es": 20, "sampled_es": 20, "mode": "plain_pytorch", "local_steps": steps, **plain}
        ]
        flower = flower_run(20, args.rounds, 20, steps, out, cpus)
        rows.append(
            {
                "num_es": 20,
                "sampled_es": 20,
                "mode": "flower_simulation",
                "local_steps": steps,
                **flower,
            }
        )
    else:  # keep the timing rows of the previous run of this script
        rows = _previous_rows(lambda mode: mode != "flower_memory")
    if "memory" not in args.parts:  # keep the memory rows of the previous run
        rows += _previous_rows(lambda mode: mode == "flower_memory")
    else:
        for num_es in (10, 100):
            memory = flower_run(num_es, args.memory_rounds, 10, MEMORY_STEPS, out)
            rows.append(
                {
                    "num_es": num_es,
                    "sampled_es": 10,
                    "mode": "flower_memory",
                    "local_steps": MEMORY_STEPS,
                    **memory,
                }
            )
    sizes = sizes_of_default_model()
    frame = pd.DataFrame(rows).assign(**sizes)
    frame["bytes_ratio_per_es"] = frame["adapter_bytes"] / frame["full_model_bytes"]
    base = frame.loc[frame["mode"] == "plain_pytorch", "round_time_s_median"].iloc[0]
    frame["overhead_ratio"] = frame["round_time_s_median"] / base
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(RESULTS, index=False)
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
