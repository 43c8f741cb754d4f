"""The cloud ServerApp: federate the agent module, evaluate it, export a deployable agent."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fed_agent.checkpoints import (
    Checkpoint,
    CheckpointError,
    adapter_sha256,
    checkpoint_root,
    resume_point,
)
from fed_agent.config import ExperimentConfig, config_from_run_config, to_yaml
from fed_agent.console import show_project_logs
from fed_agent.contracts import Market
from fed_agent.data.sources import check_run_data, heldout_data
from fed_agent.evaluation.quality import evaluate_quality
from fed_agent.incentives.ledger import Ledger
from fed_agent.incentives.policies import check_designable, make_policy
from fed_agent.models.preflight import check_model
from fed_agent.modules.adapter import AdapterError, AgentModule, agent_module
from fed_agent.outputs import RunOutputs
from fed_agent.packaging.extend import export_run_agent, load_extension
from fed_agent.seeding import seed_everything
from strategies.baseline import NO_CONTRACT, RecordedFedAvg
from strategies.contract_strategy import ContractStrategy
from strategies.polling import PromptGrid
from strategies.privacy import ValidatedCentralDP
from strategies.records import adapter_to_record, record_to_adapter

log = logging.getLogger(__name__)
app = ServerApp()
show_project_logs()  # the run's log (`flwr log`, the simulation stream) shows the project's lines


class NoParticipantsError(RuntimeError):
    """Not one ES took part in any round of the run: there is no federated agent to export."""


def check_participation(outputs: RunOutputs, done: int, ledger: Ledger | None) -> None:
    """Raise :class:`NoParticipantsError` unless some round after ``done`` had a participant."""
    rows = [r for r in outputs.rows if r["round"] > done]
    if not rows or any(r.get("participants", 0) > 0 for r in rows):
        return
    why = ""
    if ledger is not None and ledger.entries:
        counts: dict[str, int] = {}
        for entry in ledger.entries:
            counts[entry.status] = counts.get(entry.status, 0) + 1
        why = " (ledger: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())) + ")"
    message = f"no ES took part in any of the {len(rows)} rounds{why}; no agent exported"
    log.error(message)
    raise NoParticipantsError(message)


def make_evaluator(
    cfg: ExperimentConfig,
    module: AgentModule,
    outputs: RunOutputs,
    absolute_round: Callable[[int], int],
):
    """Held-out quality of the global module after each round (round 0 = the starting module)."""
    heldout = heldout_data(cfg.data, cfg.seed, module.base.is_vision)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        server_round = absolute_round(server_round)
        state = record_to_adapter(arrays)
        module.load_adapter(state)
        quality = evaluate_quality(module, heldout, cfg.training.eval_batch_size)
        row = {
            "round": server_round,
            "decision_accuracy": quality.decision_accuracy,
            "answer_loss": quality.answer_loss,
            "adapter_sha256": adapter_sha256(state),
        }
        if quality.exact_match == quality.exact_match:  # free-text held-out answers (files)
            row["exact_match"] = quality.exact_match
        outputs.record_round(row)
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


def restore(checkpoint: Checkpoint, outputs: RunOutputs) -> None:
    """Carry the earlier run's ledger and metrics (up to the checkpoint) into this run."""
    if checkpoint.ledger_csv:
        (outputs.root / "ledger.csv").write_text(checkpoint.ledger_csv)
    for row in checkpoint.metrics:
        outputs.record_round(row)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``federation.num_rounds`` rounds (continuing a checkpoint) and export the agent."""
    cfg = config_from_run_config(context.run_config)
    seed_everything(cfg.seed)
    # before the run folder: a corrupt or mismatching checkpoint moves nothing aside
    checkpoint = resume_point(cfg)
    # before the run folder and the first round: a bad agent.extend fails here, losing nothing
    extension = load_extension(cfg.agent, cfg.seed)
    # and before it: the cloud's own data folders (data.source=files) are readable and valid
    check_run_data(cfg.data, None)
    # and before it: the base loads on this machine (model.path, device, bitsandbytes)
    check_model(cfg.model)
    # and before it: the module builds on its base (a model.lora_targets layer it lacks) and
    # the policy loads (a corrupt designer checkpoint, or one for another K)
    module = agent_module(cfg.model, cfg.seed)
    # and before it: the judge can keep an update of this module (a cosine floor below 1)
    cfg.screening.check_module(sum(v.size for v in module.initial_state.values()))
    policy = None
    if cfg.incentive.policy != NO_CONTRACT:
        policy = make_policy(cfg.incentive, cfg.market.num_types, cfg.market.commitment)
        # and before it: the policy can design a contract on the market (kappa=1e30 cannot)
        check_designable(policy, Market.from_params(cfg.market))
    # and before it: a checkpoint's module fits this one and its state restores
    if checkpoint is not None:
        _check_checkpoint(checkpoint, module, cfg, policy)
    outputs = RunOutputs.create(cfg.output_dir, cfg.run_name)
    (outputs.root / "config.yaml").write_text(to_yaml(cfg))
    done = 0
    if checkpoint is not None:
        restore(checkpoint, outputs)
        done = checkpoint.server_round
        log.info("resuming after round %d of %s", done, cfg.federation.resume_from)
    if policy is None:
        final = _run_fedavg(cfg, PromptGrid(grid), module, outputs)
        _export(cfg, outputs, module, final, extension, done)
        return
    checkpoints = checkpoint_root(outputs.root)
    dp = cfg.privacy.enabled
    strategy = ContractStrategy(
        cfg,
        module,
        outputs,
        policy,
        Ledger(outputs.root / "ledger.csv"),
        round_offset=done,
        checkpoint_dir=None if dp else checkpoints,  # under DP: after the noise, by the wrapper
        weighting="uniform" if dp else "work",
        saved_state=None if checkpoint is None else checkpoint.state,
        commits=not dp,  # under DP the wrapper commits each round, after the noise
    )
    runner = ValidatedCentralDP(strategy, cfg.privacy, checkpoints) if dp else strategy
    final = module.initial_state if checkpoint is None else checkpoint.adapter
    if cfg.federation.num_rounds > done:
        result = runner.start(
            grid=PromptGrid(grid),
            initial_arrays=adapter_to_record(final),
            num_rounds=cfg.federation.num_rounds - done,
            timeout=cfg.federation.round_timeout_s,
            evaluate_fn=make_evaluator(cfg, module, outputs, strategy.absolute_round),
        )
        if len(result.arrays) > 0:  # empty when no round produced a module
            final = record_to_adapter(result.arrays)
        check_participation(outputs, done, strategy.ledger)
    _export(cfg, outputs, module, final, extension, done)


def _check_checkpoint(
    checkpoint: Checkpoint, module: AgentModule, cfg: ExperimentConfig, policy
) -> None:
    """Raise CheckpointError unless the checkpoint's adapter fits ``module`` (its keys, shapes,
    finite values) and its state restores into the strategy ``policy`` runs."""
    try:
        module.check_state(checkpoint.adapter)
    except AdapterError as err:
        where = checkpoint.folder / "adapter.safetensors" if checkpoint.folder else "the adapter"
        raise CheckpointError(f"{where} does not fit the module: {err}") from None
    if policy is not None:
        ContractStrategy.check_saved_state(cfg, module, policy, checkpoint)


def _run_fedavg(cfg, grid, module, outputs) -> dict:
    """The no-contract baseline (``strategies.baseline``; the config refuses it with
    ``federation.resume_from`` or ``privacy.enabled``); the final adapter."""
    result = RecordedFedAvg(cfg, outputs).start(
        grid=grid,
        initial_arrays=adapter_to_record(module.initial_state),
        num_rounds=cfg.federation.num_rounds,
        timeout=cfg.federation.round_timeout_s,
        evaluate_fn=make_evaluator(cfg, module, outputs, lambda r: r),
    )
    check_participation(outputs, 0, None)
    return record_to_adapter(result.arrays)


def _export(cfg, outputs, module, final, extension, done: int) -> None:
    """Export the deployable agent of the run (the final module) into the run folder."""
    info = {
        "round": max(done, cfg.federation.num_rounds),
        "config_yaml": to_yaml(cfg),
        "metrics": outputs.rows[-1] if outputs.rows else {},
    }
    agent_dir = export_run_agent(
        outputs.root / "agent",
        module,
        final,
        info,
        cfg.agent.module_name,
        extension,
        merged=cfg.agent.merged,
    )
    log.info("exported the agent to %s", agent_dir)
