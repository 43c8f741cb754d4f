"""Framework overhead, bytes on the wire and memory of the Flower simulation.

Measures, in one run on this machine:

(a) seconds per round of the Flower simulation (``fed-agent run``) against a plain PyTorch loop
    that does the same local training for the same ESs one after another, at 20 ESs, with the
    default run's model and step budget (every ES accepts and trains the full budget: the
    flat-fee policy with f = f_max and a fee above every cost);
(b) bytes sent per round (adapters down and up) against the full model's bytes;
(c) peak memory of the whole process tree with 10 and 100 virtual ESs at the same number of
    sampled ESs (10).

Round times are medians over rounds 2.. (round 1 includes starting the Ray actors and the
first, slow training steps of each process).

Run:  .venv/bin/python benchmarks/federation_overhead.py
Out:  benchmarks/results/federation_overhead.csv
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from fed_agent.config import load_config
from fed_agent.data.partition import es_examples
from fed_agent.deploy.launcher import launch_simulation
from fed_agent.modules.adapter import agent_module
from fed_agent.modules.aggregation import weighted_average
from fed_agent.modules.training import train_locally
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


def flower_run(num_es: int, rounds: int, sampled: int, steps: int, out: Path) -> dict:
    overrides = [
        *all_train_overrides(num_es, rounds, sampled, steps),
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
    }


def plain_loop(num_es: int, rounds: int, steps: int) -> dict:
    """The same local training and aggregation, one ES after another, no framework."""
    cfg = load_config("default", all_train_overrides(num_es, rounds, num_es, steps))
    module = agent_module(cfg.model, cfg.seed)
    data = [es_examples(cfg.data, cfg.seed, pid) for pid in range(num_es)]
    global_state = module.initial_state
    times = []
    with PeakMemory() as memory:
        for server_round in range(1, rounds + 1):
            start = time.perf_counter()
            states, weights = [], []
            for pid in range(num_es):
                module.load_adapter(global_state)
                seed = derive_seed(cfg.seed, "local-training", pid, server_round)
                report = train_locally(
                    module, data[pid], cfg.training, cfg.training.local_steps, seed
                )
                states.append(module.adapter_state())
                weights.append(report.steps)
            global_state = weighted_average(states, weights)
            times.append(time.perf_counter() - start)
    return {
        "round_time_s_median": float(np.median(times[1:])),
        "round1_time_s": times[0],
        "bytes_per_round": 0.0,
        "peak_rss_mb": memory.peak_bytes / 2**20,
        "participants_median": float(num_es),
    }


def sizes_of_default_model() -> dict[str, int]:
    """Bytes of one adapter and of the full base model of the default run."""
    cfg = load_config("default")
    module = agent_module(cfg.model, cfg.seed)
    return {"adapter_bytes": module.adapter_bytes, "full_model_bytes": module.base.num_bytes}


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
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="fed-agent-overhead-"))
    steps = args.local_steps or load_config("default").training.local_steps
    if "timing" in args.parts:
        plain = plain_loop(20, args.rounds, steps)
        rows = [
            {"num_es": 20, "sampled_es": 20, "mode": "plain_pytorch", "local_steps": steps, **plain}
        ]
        flower = flower_run(20, args.rounds, 20, steps, out)
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
        previous = pd.read_csv(RESULTS)
        rows = previous[~previous["mode"].eq("flower_memory")].to_dict("records")
    if "memory" in args.parts:
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
