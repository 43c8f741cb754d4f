"""The cloud ServerApp: federate the agent module, evaluate it, export a deployable agent."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flwr.app import ArrayRecord, Context, MetricRecord  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

from fed_agent.config import ExperimentConfig, to_yaml  # noqa: E402
from fed_agent.data.partition import heldout_examples  # noqa: E402
from fed_agent.evaluation.quality import evaluate_quality  # noqa: E402
from fed_agent.incentives.ledger import Ledger  # noqa: E402
from fed_agent.incentives.policies import make_policy  # noqa: E402
from fed_agent.modules.adapter import AgentModule, agent_module  # noqa: E402
from fed_agent.modules.export import export_agent  # noqa: E402
from fed_agent.outputs import RunOutputs  # noqa: E402
from fed_agent.seeding import seed_everything  # noqa: E402
from strategies.contract_strategy import ContractStrategy  # noqa: E402
from strategies.records import (  # noqa: E402
    adapter_to_record,
    config_from_context,
    record_to_adapter,
)

log = logging.getLogger(__name__)
app = ServerApp()


def make_evaluator(cfg: ExperimentConfig, module: AgentModule, outputs: RunOutputs):
    """Held-out quality of the global module after each round (round 0 = the base model)."""
    heldout = heldout_examples(cfg.data, cfg.seed, module.base.is_vision)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        module.load_adapter(record_to_adapter(arrays))
        quality = evaluate_quality(module, heldout, cfg.training.eval_batch_size)
        outputs.record_round(
            {
                "round": server_round,
                "decision_accuracy": quality.decision_accuracy,
                "answer_loss": quality.answer_loss,
            }
        )
        log.info(
            "round %d held-out: accuracy %.3f, answer loss %.3f",
            server_round,
            quality.decision_accuracy,
            quality.answer_loss,
        )
        return MetricRecord(
            {"decision-accuracy": quality.decision_accuracy, "answer-loss": quality.answer_loss}
        )

    return evaluate


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``federation.num_rounds`` rounds and export the agent to the run's output folder."""
    cfg = config_from_context(context)
    seed_everything(cfg.seed)
    outputs = RunOutputs.create(cfg.output_dir, cfg.run_name)
    (outputs.root / "config.yaml").write_text(to_yaml(cfg))
    module = agent_module(cfg.model, cfg.seed)
    policy = make_policy(cfg.incentive)
    ledger = Ledger(outputs.root / "ledger.csv")
    strategy = ContractStrategy(cfg, module, outputs, policy, ledger)
    strategy.start(
        grid=grid,
        initial_arrays=adapter_to_record(module.initial_state),
        num_rounds=cfg.federation.num_rounds,
        timeout=cfg.federation.round_timeout_s,
        evaluate_fn=make_evaluator(cfg, module, outputs),
    )
    # the strategy keeps the newest global module, also when no round could aggregate
    final = strategy.latest_state
    agent_dir = export_agent(
        outputs.root / "agent",
        module,
        final,
        {
            "round": cfg.federation.num_rounds,
            "config_yaml": to_yaml(cfg),
            "metrics": outputs.rows[-1] if outputs.rows else {},
        },
    )
    log.info("exported the agent to %s", agent_dir)
