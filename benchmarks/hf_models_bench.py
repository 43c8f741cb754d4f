"""Every ``model=hf`` architecture end to end: federate, export, load with stock peft, serve.

Run (from the repository root; ~1 min for the tiny ones, SmolLM2 adds ~1-2 min)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/hf_models_bench.py

For each architecture: a tiny random-weight model built from config (``tests/models/
tiny_hf.py``: Llama, Qwen2, LLaVA, Idefics3 whole and tiled, Qwen2-VL) or the real SmolLM2-135M-Instruct
(its converted folder, ``fed-agent models convert smollm2-135m``) is loaded through
``model=hf model.path=<folder>``; one federated round runs in process with the real strategy
and ClientApp handlers (``benchmarks/in_process.py``, 2 ESs); the module is exported; stock
``peft.PeftModel.from_pretrained`` on a stock copy of the base loads the exported adapter and
must give the module's logits; the agent answers one OpenAI chat request (a VLM's with an
``image_url`` data URL) through ``fed-agent serve``'s application. Merges its rows
into ``benchmarks/results/hf_models.csv`` by architecture (each row stamped with its
``code_version``; ``--skip-smollm2`` leaves the SmolLM2 row as it is).
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.in_process import run_in_process  # noqa: E402
from fed_agent.config import load_config, to_yaml  # noqa: E402
from fed_agent.data.partition import heldout_examples  # noqa: E402
from fed_agent.evaluation.report import upsert_table  # noqa: E402
from fed_agent.modules.adapter import AgentModule, agent_module  # noqa: E402
from fed_agent.modules.batching import encode_for  # noqa: E402
from fed_agent.packaging.export import export_agent  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = [
    "architecture",
    "kind",
    "params",
    "trained",
    "exported",
    "stock_peft_loaded",
    "served",
    "max_logit_diff",
    "adapter_logit_effect",
    "seconds",
]


def federate(folder: Path, out: Path, steps: int = 6) -> tuple[AgentModule, object, object]:
    """One federated round over 2 ESs on ``model=hf model.path=folder``; the module holds the
    round's global adapter afterwards (the evaluator loads it)."""
    overrides = [
        "model=hf",
        f"model.path={folder}",
        "model.lora_targets=[]",  # peft's defaults for the architecture
        "model.max_seq_len=96",
        "incentive=optimal",
        "federation.num_rounds=1",
        "federation.es_per_round=2",
        "federation.min_available_es=2",
        f"training.local_steps={steps}",
        "training.batch_size=8",
        "training.eval_batch_size=16",
        "data.samples_per_es=8",
        "data.eval_samples=8",
        f"output_dir={out}",
        "run_name=hf",
    ]
    run = run_in_process(2, "smoke", overrides)
    cfg = load_config("smoke", [*overrides, "federation.num_es=2"])
    return agent_module(cfg.model, cfg.seed), cfg, run


def stock_logits_diff(module: AgentModule, agent_dir: Path, folder: Path) -> tuple[float, float]:
    """Largest |logit difference| between the module and stock transformers + peft on the
    exported adapter folder, over a batch of held-out examples; and between the module and
    the stock base without the adapter (what the adapter changes)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    base = module.base
    loader = AutoModelForImageTextToText if base.is_vision else AutoModelForCausalLM
    stock = loader.from_pretrained(folder, dtype=torch.float32)
    peft_dir = agent_dir / "peft" / "agent"
    stock = PeftModel.from_pretrained(stock, peft_dir).eval()
    examples = heldout_examples(_data(), 0, base.is_vision)[:4]
    batch = encode_for(base, examples, module.cfg.max_seq_len)
    batch.pop("labels")
    with torch.no_grad():
        ours = module.model(**batch).logits.float().cpu()
        inputs = base.image_inputs(batch) if base.image_inputs else batch
        theirs = stock(**inputs).logits.float()
        with stock.disable_adapter():
            bare = stock(**inputs).logits.float()
    return float((ours - theirs).abs().max()), float((ours - bare).abs().max())


def _data():
    from fed_agent.config.schema import DataConfig

    return DataConfig(eval_samples=8)


def png_data_url(image: np.ndarray) -> str:
    """A canonical image ((3, H, W) in [-1, 1]) as a ``data:image/png;base64`` URL."""
    from PIL import Image

    pixels = ((image.transpose(1, 2, 0) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def serve_once(agent_dir: Path, is_vision: bool) -> str:
    """One chat request through ``fed-agent serve``'s application; the answer's text."""
    from starlette.testclient import TestClient

    from fed_agent.runtime import AgentRuntime
    from fed_agent.serving.app import create_app
    from fed_agent.serving.config import ServingConfig
    from fed_agent.serving.engine import AgentEngine

    data = _data()
    engine = AgentEngine(AgentRuntime.load(agent_dir, 0), 2, data.image_size)
    content: list[dict] = [{"type": "text", "text": "weather=rain | car ahead\nAction:"}]
    if is_vision:
        image = heldout_examples(data, 0, True)[0].image
        content.append({"type": "image_url", "image_url": {"url": png_data_url(image)}})
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 3}
    try:
        with TestClient(create_app(engine, ServingConfig(), "agent")) as client:
            reply = client.post("/v1/chat/completions", json=body)
    finally:
        engine.close()
    if reply.status_code != 200:
        raise RuntimeError(f"serving answered {reply.status_code}: {reply.text[:200]}")
    return reply.json()["choices"][0]["message"]["content"]


def check_architecture(name: str, kind: str, folder: Path, work: Path) -> dict:
    """The row of one architecture (see the module docstring); raises on any failed step."""
    start = time.perf_counter()
    module, cfg, run = federate(folder, work / "runs")
    shas = run.metrics["adapter_sha256"].tolist()  # round 0 (initial) and round 1
    trained = bool(run.metrics["participants"].iloc[-1] >= 1 and shas[0] != shas[-1])
    state = module.adapter_state()
    agent_dir = export_agent(work / "agent", module, state, {"config_yaml": to_yaml(cfg)})
    diff, effect = stock_logits_diff(module, agent_dir, folder)
    answer = serve_once(agent_dir, module.base.is_vision)
    return {
        "architecture": name,
        "kind": kind,
        "params": module.base.num_parameters,
        "trained": trained,
        "exported": (agent_dir / "peft" / "agent" / "adapter_model.safetensors").is_file(),
        "stock_peft_loaded": diff < 1e-4,
        "served": isinstance(answer, str),
        "max_logit_diff": diff,
        "adapter_logit_effect": effect,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    """Build the tiny folders, convert SmolLM2, check each architecture, write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "hf_models.csv")
    args = parser.parse_args()
    from tests.models.tiny_hf import BUILDERS

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (kind, build) in BUILDERS.items():
            folder = build(Path(tmp) / "models" / name)
            rows.append(check_architecture(name, kind, folder, Path(tmp) / name))
            print(rows[-1], flush=True)
        if not args.skip_smollm2:
            from fed_agent.config.schema import ModelConfig
            from fed_agent.models.real_models import store_smollm2

            folder = store_smollm2(ModelConfig(name="smollm2-135m"), 0)
            rows.append(check_architecture("smollm2-135m", "llm", folder, Path(tmp) / "smollm2"))
            print(rows[-1], flush=True)
    # rows replace their architecture's; --skip-smollm2 keeps the SmolLM2 row in place
    upsert_table([{k: row[k] for k in COLUMNS} for row in rows], args.out, ["architecture"])


if __name__ == "__main__":
    main()
