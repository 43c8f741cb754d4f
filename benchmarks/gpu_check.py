"""One leg of ``benchmarks/gpu_check.sh``: a small SmolLM2-135M federation on one device.

Runs ``--rounds`` rounds of the in-process federation (the real strategy and ClientApp
handlers, ``benchmarks/in_process.py``) with ``model=smollm2-135m model.device=<device>`` and
appends one row to ``benchmarks/results/gpu.csv``: the device's name, the dtype ``auto``
chose, local training steps per second (the ESs' steps over their training wall time, from
the ledger), the mean round wall time and the peak GPU memory in MB (empty on the CPU); a rerun
replaces the device's row.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks.in_process import run_in_process  # noqa: E402
from fed_agent.config import load_config  # noqa: E402
from fed_agent.evaluation.report import upsert_table  # noqa: E402
from fed_agent.models.devices import resolve_device, resolve_dtype  # noqa: E402
from fed_agent.modules.training import local_steps_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.csv"


def overrides(device: str, args: argparse.Namespace, out: str) -> list[str]:
    """The federation of one leg (the same on every device but ``model.device``)."""
    return [
        "model=smollm2-135m",
        f"model.device={device}",
        "incentive=optimal",
        f"federation.num_rounds={args.rounds}",
        f"federation.es_per_round={args.num_es}",
        f"federation.min_available_es={args.num_es}",
        f"training.local_steps={args.steps}",
        "training.batch_size=8",
        "data.samples_per_es=64",
        f"data.eval_samples={args.eval_samples}",
        f"output_dir={out}",
        f"run_name=gpu-check-{device}",
    ]


def measure(device: str, args: argparse.Namespace) -> dict:
    """Run the leg; its row."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        items = overrides(device, args, out)
        run = run_in_process(args.num_es, "default", items)
        ledger = pd.read_csv(run.output_dir / "ledger.csv")
    cfg = load_config("default", [*items, f"federation.num_es={args.num_es}"])
    trained = ledger[ledger["status"] == "paid"]
    steps = sum(
        local_steps_for(f, cfg.market.f_max_ghz, cfg.training.local_steps) for f in trained["f_ghz"]
    )
    rounds = run.metrics[run.metrics["round"] > 0]
    peak = torch.cuda.max_memory_allocated() / 1e6 if resolved.type == "cuda" else float("nan")
    return {
        "device": device,
        "model": cfg.model.name,
        "device_name": torch.cuda.get_device_name() if resolved.type == "cuda" else "cpu",
        "dtype": str(resolve_dtype(cfg.model.dtype, resolved)).replace("torch.", ""),
        "rounds": len(rounds),
        "es_per_round": args.num_es,
        "local_steps": args.steps,
        "train_steps": steps,
        "steps_per_s": steps / float(trained["wall_s"].sum()),
        "round_s": float(rounds["round_wall_s"].mean()),
        "peak_gpu_mb": peak,
        "total_s": time.perf_counter() - start,
    }


def main() -> None:
    """Measure one device and append its row."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", required=True, choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-es", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="training.local_steps (full effort)")
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    row = measure(args.device, args)
    upsert_table([row], args.out, ("device",))
    print(row)


if __name__ == "__main__":
    main()
