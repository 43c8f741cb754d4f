"""Robustness of the aggregation step to malformed, poisoned and free-riding replies.

Command (from the repository root; about 10 minutes on 2 idle CPU cores, 40 on a busy
shared box)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/robustness_bench.py \
        --out benchmarks/results/robustness.csv

Setup: the smoke experiment's tiny LLM with 10 ESs (each its own non-IID partition), 2
rounds (``--rounds``), every ES invited every round; ESs 0 and 1 (20 %) attack in every
round. Each attack of ``benchmarks.attacks`` is run under each defence, plus the no-attack
run:

- ``plain_fedavg``: what Flower's FedAvg does -- no value checks, weights = the claimed
  example counts; a key or shape mismatch raises and ends the run (recorded as ``crashed``);
- ``validated_median``: our reply validation (``strategies.validation.split_replies``), then
  the coordinate-wise median -- robust aggregation alone, no screening;
- ``screened_<rule>``: validation, then update screening (``screen_updates``), then ``<rule>``
  (fedavg or trimmed_mean) -- our full defence.

This mirrors the strategy's ``aggregate_train`` step: replies are real Flower Messages
built with ``strategies.records``, validated and screened by the same functions, and
aggregated by ``fed_agent.modules.aggregation.aggregate``. Honest local training is the
project's ``train_locally`` on ``es_examples``; quality is ``evaluate_quality`` on the
held-out split. Honest updates are cached per (ES, round, global-state hash), which is
exact: the same global state and seed give the same training.

Columns: ``final_quality`` = ``exp(-answer_loss)``, the geometric-mean probability the
final global module gives the held-out answer tokens (higher is better; NaN when the run
crashed or the global module became non-finite) -- at this tiny scale the decision accuracy
(also reported, ``decision_accuracy``) barely moves in a few rounds, the answer loss does;
``rejected_replies`` = replies removed by validation or screening over all rounds (attackers'
and honest ones: ``rejected_honest`` counts the latter, i.e. false positives);
``paid_to_attackers`` = attacker replies that were aggregated, i.e. passed every check the
defence applies and would be paid under a pay-for-accepted-work rule (for a robust rule
without screening, an attacker whose update was trimmed away coordinate-wise is still
"accepted" and paid -- that is the point of screening).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import Message, MessageType, Metadata, MetricRecord, RecordDict

from benchmarks.attacks import ATTACKS, apply_attack
from fed_agent.config import load_config
from fed_agent.data.partition import es_examples, heldout_examples
from fed_agent.evaluation.quality import evaluate_quality
from fed_agent.modules.adapter import AdapterState, agent_module
from fed_agent.modules.aggregation import aggregate, weighted_average
from fed_agent.modules.training import train_locally
from fed_agent.outputs import write_table_atomic
from fed_agent.protocol import ARRAYS, METRICS, TrainReply
from fed_agent.seeding import derive_seed, seed_everything
from strategies.records import adapter_to_record
from strategies.validation import screen_updates, split_replies

NUM_ES = 10
NUM_ATTACKERS = 2
NUM_ROUNDS = 2
DEFENCES = ("plain_fedavg", "validated_median", "screened_fedavg", "screened_trimmed_mean")
OVERRIDES = [f"federation.num_es={NUM_ES}", f"federation.es_per_round={NUM_ES}"]


@dataclass
class Outcome:
    """One scenario's result over all rounds."""

    final_quality: float = math.nan
    answer_loss: float = math.nan
    decision_accuracy: float = math.nan
    rejected_replies: int = 0
    rejected_honest: int = 0
    paid_to_attackers: int = 0
    status: str = "ok"


class HonestTrainer:
    """Honest local training with a cache keyed by (ES, round, global-state hash)."""

    def __init__(self, cfg, module) -> None:
        self.cfg, self.module = cfg, module
        self.data = [es_examples(cfg.data, cfg.seed, i) for i in range(NUM_ES)]
        self.cache: dict[tuple[int, int, str], tuple[AdapterState, dict]] = {}

    def __call__(self, es: int, server_round: int, global_state: AdapterState):
        digest = hashlib.sha256(b"".join(v.tobytes() for v in global_state.values())).hexdigest()
        key = (es, server_round, digest)
        if key not in self.cache:
            self.module.load_adapter(global_state)
            seed = derive_seed(self.cfg.seed, "local-training", es, server_round)
            report = train_locally(
                self.module, self.data[es], self.cfg.training, self.cfg.training.local_steps, seed
            )
            # no strategy here: the round and nonce echo is not checked (nonce 0)
            reply = TrainReply(
                len(self.data[es]), report.mean_loss, report.steps, report.wall_s, server_round, 0
            )
            self.cache[key] = (self.module.adapter_state(), reply.to_dict())
        return self.cache[key]


def _message(node_id: int, adapter: AdapterState, metrics: dict) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id="",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="",
        created_at=time.time(),
        ttl=3600.0,
        message_type=MessageType.TRAIN,
    )
    content = RecordDict({ARRAYS: adapter_to_record(adapter), METRICS: MetricRecord(metrics)})
    return Message(content=content, metadata=metadata)


def _aggregate_round(
    defence: str, global_state, replies, attackers: set[int], module, max_examples, outcome
):
    """One round's aggregate step under ``defence``; returns the new global state."""
    if defence == "plain_fedavg":
        adapters = [a for a, _ in replies]
        weights = [float(m["num-examples"]) for _, m in replies]
        new = weighted_average(adapters, weights)  # raises on key/shape mismatch, like flwr
        outcome.paid_to_attackers += len(attackers)
        return new
    stage, rule = defence.split("_", 1)
    messages = [_message(i, a, m) for i, (a, m) in enumerate(replies)]
    accepted, rejected = split_replies(messages, module, max_examples)
    if stage == "screened":
        accepted, screened = screen_updates(global_state, accepted)
        rejected += screened
    outcome.rejected_replies += len(rejected)
    outcome.rejected_honest += sum(r.node_id not in attackers for r in rejected)
    outcome.paid_to_attackers += sum(r.node_id in attackers for r in accepted)
    if not accepted:
        return global_state
    weights = [r.metrics.num_examples for r in accepted]
    return aggregate(rule, [r.adapter for r in accepted], weights)


def run_scenario(
    attack: str, defence: str, trainer: HonestTrainer, heldout, num_rounds: int = NUM_ROUNDS
) -> Outcome:
    """Run ``num_rounds`` rounds with ESs 0..NUM_ATTACKERS-1 applying ``attack``."""
    cfg, module = trainer.cfg, trainer.module
    global_state = {k: v.copy() for k, v in module.initial_state.items()}
    attackers = set() if attack == "none" else set(range(NUM_ATTACKERS))
    outcome = Outcome()
    for server_round in range(1, num_rounds + 1):
        replies = []
        for es in range(NUM_ES):
            adapter, metrics = trainer(es, server_round, global_state)
            if es in attackers:
                rng = np.random.default_rng(derive_seed(cfg.seed, "attack", es, server_round))
                adapter, metrics = apply_attack(attack, adapter, global_state, metrics, rng)
            replies.append((adapter, metrics))
        try:
            global_state = _aggregate_round(
                defence, global_state, replies, attackers, module, cfg.data.samples_per_es, outcome
            )
        except ValueError as err:
            outcome.status = f"crashed in round {server_round}: {str(err)[:60]}"
            return outcome
        if not all(np.isfinite(v).all() for v in global_state.values()):
            # every ES would refuse to load it next round; the run is lost
            outcome.status = f"non-finite global module after round {server_round}"
            return outcome
    module.load_adapter(global_state)
    quality = evaluate_quality(module, heldout, cfg.training.eval_batch_size)
    outcome.answer_loss, outcome.decision_accuracy = quality.answer_loss, quality.decision_accuracy
    outcome.final_quality = math.exp(-quality.answer_loss)
    return outcome


def main() -> None:
    """Run every (attack, defence) scenario and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/robustness.csv"))
    parser.add_argument("--rounds", type=int, default=NUM_ROUNDS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # rejections are counted, not logged per reply
    cfg = load_config("smoke", OVERRIDES)
    seed_everything(cfg.seed)
    module = agent_module(cfg.model, cfg.seed)
    trainer = HonestTrainer(cfg, module)
    heldout = heldout_examples(cfg.data, cfg.seed, module.base.is_vision)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.perf_counter()
    for attack in ("none", *ATTACKS):
        for defence in DEFENCES:
            outcome = run_scenario(attack, defence, trainer, heldout, args.rounds)
            aggregation = "fedavg" if defence == "plain_fedavg" else defence.split("_", 1)[1]
            rows.append(
                {
                    "attack": attack,
                    "fraction_attackers": 0.0 if attack == "none" else NUM_ATTACKERS / NUM_ES,
                    "defence": defence.split("_", 1)[0],
                    "aggregation": aggregation,
                    **vars(outcome),
                }
            )
            print(
                f"{time.perf_counter() - started:7.1f}s {attack:12s} {defence:22s} "
                f"{outcome.final_quality:.4f} {outcome.status}",
                flush=True,
            )
            # rewritten after every scenario: an interrupted run keeps what it measured
            write_table_atomic(pd.DataFrame(rows), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
