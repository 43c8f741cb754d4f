"""A federation in one process: the real ContractStrategy and the real ClientApp handlers,
without SuperLink, SuperNodes or Ray.

The strategy's messages go to :class:`InProcessGrid`, which answers every QUERY and TRAIN by
calling the ClientApp's handlers (``clients.client_app.query`` / ``train``) with each virtual
ES's context, one after another: what a simulation does, minus the processes. The contracts,
choices, selection, training, validation, aggregation, ledger and held-out evaluation are the
code a real run executes; only the transport differs. Benchmarks that run many federations on
a small machine use it (``time_to_quality_bench.py``); ``strategies_bench.py`` keeps the real
Flower simulation.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.app.metadata import Metadata
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import query, train
from fed_agent.config import load_config
from fed_agent.incentives.ledger import Ledger
from fed_agent.incentives.policies import make_policy
from fed_agent.models.preflight import check_model
from fed_agent.modules.adapter import agent_module
from fed_agent.outputs import RunOutputs
from fed_agent.protocol import NUM_PARTITIONS, PARTITION_ID
from fed_agent.seeding import seed_everything
from strategies.contract_strategy import ContractStrategy
from strategies.records import adapter_to_record
from strategies.server_app import make_evaluator

HANDLERS = {MessageType.QUERY: query, MessageType.TRAIN: train}
CLOUD_NODE_ID = 0


def set_task_identity(node_id: int) -> None:
    """Flower reads the sender of a new Message from the process's task identity."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, node_id


def metadata(src: int, dst: int, kind: str, message_id: str = "") -> Metadata:
    """Message metadata as the SuperLink would set it (also the test grids' one home)."""
    return Metadata(
        run_id=1,
        message_id=message_id,
        src_node_id=src,
        dst_node_id=dst,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=kind,
    )


class InProcessGrid:
    """A Grid whose ``num_es`` virtual ESs (node ids 1..num_es, partition i-1) answer in-process."""

    def __init__(self, num_es: int, experiment: str, overrides: Sequence[str]) -> None:
        run_config = {"experiment": experiment, "overrides": shlex.join(overrides)}
        self.contexts = {
            i + 1: Context(
                run_id=1,
                node_id=i + 1,
                state=RecordDict(),
                node_config={PARTITION_ID: i, NUM_PARTITIONS: num_es},
                run_config=run_config,
            )
            for i in range(num_es)
        }
        self._sent = 0

    def get_node_ids(self) -> list[int]:
        """Every virtual ES is always connected."""
        return list(self.contexts)

    def send_and_receive(
        self, messages: Sequence[Message], timeout: float | None = None
    ) -> list[Message]:
        """Each message answered by its destination's ClientApp handler, in order."""
        replies = []
        for message in messages:
            self._sent += 1
            dst, kind = message.metadata.dst_node_id, message.metadata.message_type
            if kind not in HANDLERS:
                raise ValueError(f"in-process grid: no handler for {kind!r}; has {list(HANDLERS)}")
            addressed = Message(
                content=message.content,
                metadata=metadata(CLOUD_NODE_ID, dst, kind, f"m{self._sent}"),
            )
            set_task_identity(dst)
            try:
                replies.append(HANDLERS[kind](addressed, self.contexts[dst]))
            finally:
                set_task_identity(CLOUD_NODE_ID)
        return replies


@dataclass(frozen=True)
class InProcessRun:
    """What a run left: its folder (metrics.csv, ledger.csv) and the per-round metrics."""

    output_dir: Path
    metrics: pd.DataFrame


def run_in_process(
    num_es: int,
    experiment: str,
    overrides: Sequence[str],
    stop: Callable[[float], bool] = lambda accuracy: False,
) -> InProcessRun:
    """Run ``federation.num_rounds`` rounds (fewer if ``stop(held-out accuracy)`` says so).

    ``overrides`` are Hydra overrides of ``experiment`` (``federation.num_es`` is set here).
    Round 0 is the starting module's quality; each later row is the round's metrics with the
    quality of the module after it, as ``metrics.csv`` of a Flower run has them.
    """
    overrides = [*overrides, f"federation.num_es={num_es}"]
    cfg = load_config(experiment, shlex.join(overrides))
    seed_everything(cfg.seed)
    check_model(cfg.model)  # before the run folder, as the ServerApp does
    outputs = RunOutputs.create(cfg.output_dir, cfg.run_name)
    module = agent_module(cfg.model, cfg.seed)
    policy = make_policy(cfg.incentive, cfg.market.num_types, cfg.market.commitment)
    ledger = Ledger(outputs.root / "ledger.csv")
    strategy = ContractStrategy(cfg, module, outputs, policy, ledger)
    evaluate = make_evaluator(cfg, module, outputs, strategy.absolute_round)
    grid = InProcessGrid(num_es, experiment, overrides)
    set_task_identity(CLOUD_NODE_ID)
    arrays = adapter_to_record(module.initial_state)
    evaluate(0, arrays)
    for server_round in range(1, cfg.federation.num_rounds + 1):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        merged, _ = strategy.aggregate_train(server_round, grid.send_and_receive(messages))
        arrays = arrays if merged is None else merged
        quality = evaluate(server_round, arrays)
        if stop(float(quality["decision-accuracy"])):
            break
    return InProcessRun(outputs.root, pd.read_csv(outputs.metrics_path))
