"""Memory one ES needs per base model: peak resident memory of a process that loads the base
and trains its LoRA module, beside the weights' and the adapter's bytes.

Run (from the repository root; each model in a fresh process, so peaks do not mix)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/model_memory_bench.py

Writes ``benchmarks/results/model_memory.csv``: per model, parameters, weight bytes (float32),
adapter bytes (what one message carries), trainable parameters, and the peak RSS of loading
plus ``--steps`` training steps at the model's config and batch size ``--batch-size``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results" / "model_memory.csv"
MODELS = {
    "tiny-llm": "default",
    "tiny-vlm": "vlm",
    "smollm2-135m": "default",
    "minilm-perception": "default",
}
"""Model -> the experiment it trains in (the VLM reads images)."""


def measure(model: str, steps: int, batch_size: int) -> dict:
    """Load ``model``, train ``steps`` steps; the row (run in its own process)."""
    import torch

    from fed_agent.config import load_config
    from fed_agent.data.partition import es_examples
    from fed_agent.modules.adapter import agent_module
    from fed_agent.modules.training import train_locally

    torch.set_num_threads(1)
    overrides = [f"model={model}", "incentive=optimal", f"training.batch_size={batch_size}"]
    cfg = load_config(MODELS[model], overrides)
    start = time.perf_counter()
    module = agent_module(cfg.model, cfg.seed)
    load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    examples = es_examples(cfg.data, cfg.seed, 0, module.base.is_vision)
    report = train_locally(module, examples, cfg.training, steps, 0)
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    return {
        "model": model,
        "params": module.base.num_parameters,
        "weights_mb": module.base.num_bytes / 1e6,
        "trainable": trainable,
        "adapter_mb": module.adapter_bytes / 1e6,
        "batch_size": batch_size,
        "steps": steps,
        "s_per_step": report.wall_s / max(steps, 1),
        "load_peak_rss_mb": load_rss,
        "train_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "total_s": time.perf_counter() - start,
    }


def main() -> None:
    """Each model in a child process (``--one``), the rows into the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.batch_size)))
        return
    from fed_agent.evaluation.report import upsert_table

    for model in args.models.split(","):
        command = [sys.executable, __file__, "--one", model, "--steps", str(args.steps)]
        command += ["--batch-size", str(args.batch_size)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        upsert_table([row], RESULTS, ("model",))
        print(row, flush=True)


if __name__ == "__main__":
    main()
