"""The agent served at the edge under concurrent load, against the modelled cloud-only one.

Run (from the repository root)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serving_bench.py \
        --agent tiny-llm-federated=outputs/default/agent --untrained smollm2-135m \
        --concurrency 1 4 16 --requests 40

For each agent: ``fed-agent serve`` in its own process on a free loopback port, then
``fed-agent evaluate --endpoint`` (``fed_agent.evaluation.serving``: a closed loop of ``c``
users per level, streamed chat requests of exactly ``--max-new-tokens`` tokens, p50/p95 latency,
time to first token, throughput; cloud-only = the same requests plus ``rtt_ms`` and the upload),
then the server is stopped by its PID. Rows go to ``benchmarks/results/serving.csv`` (keys
below), each with the 1-minute load average of the machine when its level ended: on a shared machine that number says how far the timings are inflated.

``--untrained MODEL`` serves a registry model with its initial adapter (B = 0): the latency of
an agent on that base, whatever it learned (serving time does not depend on the adapter's
values). ``--agent NAME=DIR`` serves an exported agent under the model name NAME.

Each row names the server code that answered it (``server_rev``: the last commit of
``fed_agent/serving``, ``+dirty`` when it has uncommitted changes) and its repeat (``--run``),
and rows merge by (model, deployment, concurrency, server_rev, run): figures of two server
versions, and repeats on a noisy machine, stay side by side. ``--server-root DIR`` runs
``fed-agent serve`` from another copy of the code (e.g. an older checkout, with
``--server-rev`` naming it) against the same load generator.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fed_agent.deploy.launcher import free_port  # noqa: E402
from fed_agent.evaluation.serving import Endpoint, EndpointError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
TABLE = "serving.csv"
KEYS = ["model", "deployment", "concurrency", "server_rev", "run"]
SERVER_START_TIMEOUT_S = 600.0


def server_rev(root: Path) -> str:
    """The last commit of ``fed_agent/serving`` in ``root`` (``+dirty`` with local changes)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{root} is no git checkout: name its code with --server-rev")
        return done.stdout.strip()

    rev = git("log", "-1", "--format=%h", "--", "fed_agent/serving")
    return rev + ("+dirty" if git("status", "--porcelain", "--", "fed_agent/serving") else "")


def merge_rows(new: Path, table: Path, rev: str, run: int) -> None:
    """Add ``new``'s rows to ``table`` under ``server_rev=rev``, ``run`` (same keys are
    replaced)."""
    import pandas as pd

    rows = pd.read_csv(new).assign(server_rev=rev, run=run)
    if table.is_file():
        old = pd.read_csv(table)
        if not {"server_rev", "run"} <= set(old.columns):
            raise SystemExit(f"{table} lacks server_rev or run: add them to its rows")
        kept = old.merge(rows[KEYS], on=KEYS, how="left", indicator=True)
        rows = pd.concat([old[kept["_merge"].eq("left_only").values], rows], ignore_index=True)
    table.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(table, index=False)


def export_untrained(model: str, out_dir: Path) -> Path:
    """An agent of ``model`` (default experiment, ``model=<name>``) with its initial adapter."""
    from fed_agent.config import load_config, to_yaml
    from fed_agent.modules.adapter import agent_module
    from fed_agent.packaging.export import export_agent

    cfg = load_config("default", [f"model={model}"])
    module = agent_module(cfg.model, cfg.seed)
    info = {"training": "none", "config_yaml": to_yaml(cfg)}
    return export_agent(out_dir, module, module.initial_state, info)


def serve(agent_dir: Path, name: str, log: Path, root: Path = REPO) -> tuple[subprocess.Popen, str]:
    """Start ``fed-agent serve`` (the code in ``root``) and wait (bounded) until its /health
    answers."""
    port = free_port()
    command = [sys.executable, "-m", "fed_agent.cli", "serve", str(agent_dir.resolve())]
    command += ["--port", str(port), "--model-name", name]
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=root, env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            Endpoint.probe(url)
            return process, url
        except EndpointError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"the server for {name} did not come up; see {log}") from None
            time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--untrained", action="append", default=[], metavar="MODEL")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--server-root", type=Path, default=REPO, help="code fed-agent serve runs")
    parser.add_argument("--server-rev", default=None, help="name of that code (default: git)")
    parser.add_argument("--run", type=int, default=1, help="repeat number (rows are kept apart)")
    args = parser.parse_args()
    rev = args.server_rev or server_rev(args.server_root)
    with tempfile.TemporaryDirectory() as tmp:
        agents = [tuple(a.split("=", 1)) for a in args.agent]
        agents += [(m, export_untrained(m, Path(tmp) / m)) for m in args.untrained]
        for name, agent_dir in agents:
            log = Path(tmp) / f"{name}.log"
            process, url = serve(Path(agent_dir), name, log, args.server_root.resolve())
            level_dir = Path(tmp) / f"{name}-rows"
            try:
                command = [sys.executable, "-m", "fed_agent.cli", "evaluate", str(agent_dir)]
                command += ["--endpoint", url, "--out", str(level_dir)]
                command += ["--requests", str(args.requests)]
                command += ["--max-new-tokens", str(args.max_new_tokens), "--concurrency"]
                command += [str(c) for c in args.concurrency]
                subprocess.run(command, check=True, cwd=REPO)
            finally:
                process.terminate()
                process.wait(60)
            merge_rows(level_dir / TABLE, args.out / TABLE, rev, args.run)
            print(f"{name} ({rev}): rows merged into {args.out / TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
