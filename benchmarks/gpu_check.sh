#!/usr/bin/env bash
# The same small SmolLM2-135M federation (2 ESs, 3 rounds, in process) on the CPU and on CUDA:
# steps/s, round time and peak GPU memory per device in benchmarks/results/gpu.csv (one row
# per device; a rerun replaces that device's row). The CUDA leg runs only where
# torch sees a GPU; the CPU leg runs everywhere. Extra arguments go to both legs
# (e.g. --rounds 2 --steps 4). Where CUDA exists it then measures SmolLM2's agent_eval rows over
# five seeds on the GPU in float32, as the CPU rows of the other models (over an hour a seed on
# two CPU cores): set AGENT_EVAL=0 to skip that part.
#
#   benchmarks/gpu_check.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
"$PYTHON" -m fed_agent.cli models convert smollm2-135m >/dev/null  # the cached folder, once
"$PYTHON" benchmarks/gpu_check.py --device cpu "$@"
if "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    "$PYTHON" benchmarks/gpu_check.py --device cuda "$@"
    if [ "${AGENT_EVAL:-1}" != 0 ]; then
        "$PYTHON" benchmarks/agent_eval_bench.py --models smollm2-135m --seeds 0,1,2,3,4 \
            --trainings local-only,centralised --overrides model.device=cuda model.dtype=float32
    fi
else
    echo "no CUDA GPU here: only the CPU leg ran" >&2
fi
