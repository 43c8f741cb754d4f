"""CPU seconds of one deployment message: a fresh process that imports the ClientApp and answers.

In Flower 1.42's deployment engine every message is a new ``flwr-clientapp`` process, so the
cost of a message is its imports plus its handler. This runs the ClientApp of ``--app-dir`` (a
checkout of any commit) in a fresh Python process per message kind and reports the process's
CPU seconds (user + system: far less sensitive to a shared box's load than wall time), its wall
time and whether torch was imported. The ``flwr-clientapp`` runtime around the handler is not
included.

Run:  .venv/bin/python benchmarks/message_cost.py [--app-dir /tmp/old-checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
KINDS = ("public-facts", "train")
_CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
kind = sys.argv[1]
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.metadata import Metadata
from flwr.supercore.task_identity import TaskIdentity
import clients.client_app as app
TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 7
context = Context(run_id=1, node_id=7, state=RecordDict(),
                  node_config={"partition-id": 0, "num-partitions": 3},
                  run_config={"experiment": "smoke", "overrides": ""})
def addressed(content, message_type):
    metadata = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=7,
                        reply_to_message_id="", group_id="1", created_at=time.time(),
                        ttl=3600.0, message_type=message_type)
    return Message(content=content, metadata=metadata)
if kind == "public-facts":
    app.query(addressed(RecordDict({"config": ConfigRecord({"phase": "public-facts"})}), "query"), context)
else:
    from fed_agent.config import load_config
    from fed_agent.modules.adapter import agent_module
    from fed_agent.protocol import TrainInstruction
    from strategies.records import adapter_to_record
    cfg = load_config("smoke")
    module = agent_module(cfg.model, cfg.seed)
    instruction = TrainInstruction(1, cfg.training.local_steps, module.base.fingerprint, 5.0, 1.0, 3)
    content = RecordDict({"arrays": adapter_to_record(module.initial_state),
                          "config": ConfigRecord(instruction.to_dict())})
    app.train(addressed(content, "train"), context)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"message": kind, "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                  "wall_s": round(time.perf_counter() - start, 2), "torch": "torch" in sys.modules}))
"""


def message_cost(kind: str, app_dir: Path) -> dict:
    """One message of ``kind`` answered by the ClientApp of ``app_dir`` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(app_dir), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, kind],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-dir", type=Path, default=PROJECT_ROOT)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}")
    for kind in KINDS:
        print(message_cost(kind, args.app_dir.resolve()))


if __name__ == "__main__":
    main()
