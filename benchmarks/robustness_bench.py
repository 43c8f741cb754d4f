"""Robustness of the aggregation step to malformed, poisoned and free-riding replies.

Commands (from the repository root)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/robustness_bench.py --suite base
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/robustness_bench.py --suite extended
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/robustness_bench.py --suite small

Each (suite, experiment) is one setup with its own table,
``benchmarks/results/robustness_<suite>_<experiment>.csv`` (every row stamped with the
``code_version`` that produced it), and the extended suite redraws its plot beside it. ``base`` (about 10 minutes on 2 idle cores, 40 on a busy shared box)
is described first; ``extended`` and ``small`` after it.

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
aggregated by ``fed_agent.screening.aggregation.aggregate``. Honest local training is the
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

Suite ``extended`` (20 ESs, 2 rounds, attackers at 10/30/45 %): the attacks of
``benchmarks.attacks.COORDINATED_ATTACKS`` -- colluders sending one shared update that hugs
the limits, independent threshold-hugging (adaptive) attackers, peer-copy and scaled-copy
(0.15x) free-riders. Attackers reply after the honest ESs. Suite ``small``: rounds of 1 or 2
participants, the last one an attacker (50x and 500x scaled, zero, sign-flipped, noise,
threshold-hugging updates). Both compare
``plain_fedavg``, the median-based ``screened_fedavg`` and ``expected_fedavg``: our default --
validation, judging against the cloud's expectations (``strategies.validation.judge_updates``,
the cloud's reference update on its own split), clipping to the expected norm, work-weighted
FedAvg, reply by reply (the settlement: ``benchmarks/robustness_settlement.py``).
``quality_vs_no_attack``: ``final_quality`` over the no-attack run's (suite, participants, defence); ``initial_quality`` is the module before any round.
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

from benchmarks.attacks import (
    ATTACKS,
    COORDINATED_ATTACKS,
    AttackParams,
    apply_attack,
    coordinated_deltas,
)
from fed_agent.config import load_config
from fed_agent.data.partition import cloud_examples, es_examples, heldout_examples
from fed_agent.evaluation.provenance import code_version
from fed_agent.evaluation.quality import evaluate_quality
from fed_agent.modules.adapter import AdapterState, agent_module
from fed_agent.modules.reference import reference_update
from fed_agent.modules.training import learning_effort, train_locally
from fed_agent.outputs import write_table_atomic
from fed_agent.protocol import ARRAYS, METRICS, TrainReply
from fed_agent.screening.aggregation import aggregate, weighted_average
from fed_agent.screening.judge import Reference, UpdateScreen
from fed_agent.screening.robust import flatten, unflatten
from fed_agent.seeding import derive_seed, seed_everything
from strategies.records import adapter_to_record
from strategies.validation import clip_to_expected, judge_updates, screen_updates, split_replies

RESULTS = Path(__file__).resolve().parent / "results"

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

    def __init__(self, cfg, module, num_es: int = NUM_ES) -> None:
        self.cfg, self.module = cfg, module
        self.data = [es_examples(cfg.data, cfg.seed, i) for i in range(num_es)]
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


def _with_final_quality(outcome: Outcome, module, global_state, heldout, cfg) -> Outcome:
    """``outcome`` with the held-out quality of ``global_state``."""
    module.load_adapter(global_state)
    quality = evaluate_quality(module, heldout, cfg.training.eval_batch_size)
    outcome.answer_loss, outcome.decision_accuracy = quality.answer_loss, quality.decision_accuracy
    outcome.final_quality = math.exp(-quality.answer_loss)
    return outcome


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
    return _with_final_quality(outcome, module, global_state, heldout, cfg)


EXT_NUM_ES = 20
FRACTIONS = (0.1, 0.3, 0.45)
SMALL_ROUNDS = (1, 2)
SMALL_ATTACKS = ("scale_50", "scale_500", "stale", "sign_flip", "noise", "hug")
EXT_DEFENCES = ("plain_fedavg", "screened_fedavg", "expected_fedavg")
SUITES = ("base", "extended", "small")


@dataclass
class Cloud:
    """The cloud side of one scenario: its expectations, reference updates, last global step."""

    trainer: HonestTrainer
    expectations: UpdateScreen
    last_step: np.ndarray | None = None

    def reference(self, global_state: AdapterState, server_round: int) -> Reference:
        """The cloud's reference update (the strategy's: its own split, the ESs' steps)."""
        cfg = self.trainer.cfg
        split = cloud_examples(cfg.data, cfg.seed, self.expectations.cfg.reference_samples)
        steps = self.expectations.cfg.steps_for([cfg.training.local_steps])
        seed = derive_seed(cfg.seed, "reference-update", server_round)
        return reference_update(self.trainer.module, global_state, split, cfg.training, steps, seed)


def _attacked(attack: str, honest: list, attackers: list[int], global_state, rng) -> list:
    """The replies ``(adapter, metrics)`` with the attackers' replaced by ``attack``."""
    replies = list(honest)
    keys = list(global_state)
    origin = flatten(global_state, keys)
    if attack in COORDINATED_ATTACKS:
        peers = [i for i in range(len(honest)) if i not in attackers]
        peer = flatten(honest[peers[0]][0], keys) - origin if peers else np.zeros_like(origin)
        own = [flatten(honest[i][0], keys) - origin for i in attackers]
        sent = coordinated_deltas(attack, own, peer, rng)
        for i, delta in zip(attackers, sent, strict=True):
            replies[i] = (unflatten(origin + delta, global_state), honest[i][1])
        return replies
    name, params = attack, AttackParams()
    if attack.startswith("scale_"):
        name, params = "scale", AttackParams(scale_factor=float(attack.split("_")[1]))
    for i in attackers:
        replies[i] = apply_attack(name, honest[i][0], global_state, honest[i][1], rng, params)
    return replies


def _expected_round(cloud: Cloud, global_state, accepted, server_round: int):
    """``expected_fedavg``: judge against the cloud's expectations, clip, work-weighted mean."""
    cfg = cloud.trainer.cfg
    reference = cloud.reference(global_state, server_round)
    effort = learning_effort(cfg.training.lr_schedule, cfg.training.local_steps)
    efforts = {r.node_id: effort for r in accepted}
    kept, rejected, judged = judge_updates(
        cloud.expectations, global_state, accepted, efforts, reference, cloud.last_step
    )
    cloud.expectations.record(judged)
    kept = clip_to_expected(cloud.expectations, global_state, kept, efforts, reference)
    return kept, rejected


def _aggregate_extended(defence, cloud, global_state, replies, attackers, outcome, server_round):
    """One round under ``defence``; returns the new global state."""
    if defence == "plain_fedavg":
        outcome.paid_to_attackers += len(attackers)
        return weighted_average([a for a, _ in replies], [m["num-examples"] for _, m in replies])
    module, max_examples = cloud.trainer.module, cloud.trainer.cfg.data.samples_per_es
    messages = [_message(i, a, m) for i, (a, m) in enumerate(replies)]
    accepted, rejected = split_replies(messages, module, max_examples)
    if defence == "screened_fedavg":
        accepted, screened = screen_updates(global_state, accepted)
    elif defence == "expected_fedavg":
        accepted, screened = _expected_round(cloud, global_state, accepted, server_round)
    else:
        raise ValueError(f"unknown defence {defence!r}; choose from {EXT_DEFENCES}")
    rejected += screened
    outcome.rejected_replies += len(rejected)
    outcome.rejected_honest += sum(r.node_id not in attackers for r in rejected)
    outcome.paid_to_attackers += sum(r.node_id in attackers for r in accepted)
    if not accepted:
        return global_state
    new = aggregate("fedavg", [r.adapter for r in accepted], [1.0] * len(accepted))
    keys = list(global_state)
    cloud.last_step = flatten(new, keys) - flatten(global_state, keys)
    return new


def run_participants(
    attack: str, attackers: list[int], participants: int, defence: str, trainer, heldout, rounds
) -> Outcome:
    """``rounds`` rounds of ``participants`` ESs, ``attackers`` (the last ones) attacking."""
    cfg, module = trainer.cfg, trainer.module
    global_state = {k: v.copy() for k, v in module.initial_state.items()}
    cloud = Cloud(trainer, UpdateScreen())
    outcome = Outcome()
    for server_round in range(1, rounds + 1):
        honest = [trainer(es, server_round, global_state) for es in range(participants)]
        rng = np.random.default_rng(derive_seed(cfg.seed, "attack", attack, server_round))
        replies = _attacked(attack, honest, attackers, global_state, rng) if attackers else honest
        global_state = _aggregate_extended(
            defence, cloud, global_state, replies, set(attackers), outcome, server_round
        )
        if not all(np.isfinite(v).all() for v in global_state.values()):
            outcome.status = f"non-finite global module after round {server_round}"
            return outcome
    return _with_final_quality(outcome, module, global_state, heldout, cfg)


def _scenarios(suite: str):
    """``(attack, attackers, participants)`` of a suite, the no-attack runs first."""
    if suite == "extended":
        yield "none", [], EXT_NUM_ES
        for attack in COORDINATED_ATTACKS:
            for fraction in FRACTIONS:
                k = round(fraction * EXT_NUM_ES)
                yield attack, list(range(EXT_NUM_ES - k, EXT_NUM_ES)), EXT_NUM_ES
    elif suite == "small":
        for n in SMALL_ROUNDS:
            yield "none", [], n
            for attack in SMALL_ATTACKS:
                yield attack, [n - 1], n
    else:
        raise ValueError(f"unknown suite {suite!r}; choose from {SUITES}")


def run_base(args, cfg, module, heldout, write) -> None:
    """The base suite: every attack of ``benchmarks.attacks.ATTACKS`` at 20 % of 10 ESs."""
    trainer = HonestTrainer(cfg, module)
    started = time.perf_counter()
    for attack in ("none", *ATTACKS):
        for defence in DEFENCES:
            outcome = run_scenario(attack, defence, trainer, heldout, args.rounds)
            aggregation = "fedavg" if defence == "plain_fedavg" else defence.split("_", 1)[1]
            write(
                {
                    "suite": "base",
                    "attack": attack,
                    "fraction_attackers": 0.0 if attack == "none" else NUM_ATTACKERS / NUM_ES,
                    "participants": NUM_ES,
                    "rounds": args.rounds,
                    "defence": defence.split("_", 1)[0],
                    "aggregation": aggregation,
                    **vars(outcome),
                },
                f"{time.perf_counter() - started:7.1f}s {attack:12s} {defence:22s}",
            )


def run_more(suite: str, args, cfg, module, heldout, write, only: set[str]) -> None:
    """The extended or small suite (see the module docstring); ``only``: these attacks."""
    trainer = HonestTrainer(cfg, module, EXT_NUM_ES)
    started = time.perf_counter()
    for attack, attackers, participants in _scenarios(suite):
        if only and attack not in only:
            continue
        for defence in EXT_DEFENCES:
            outcome = run_participants(
                attack, attackers, participants, defence, trainer, heldout, args.rounds
            )
            write(
                {
                    "suite": suite,
                    "attack": attack,
                    "fraction_attackers": len(attackers) / participants,
                    "participants": participants,
                    "rounds": args.rounds,
                    "defence": defence.split("_", 1)[0],
                    "aggregation": "fedavg",
                    **vars(outcome),
                },
                f"{time.perf_counter() - started:7.1f}s {attack:12s} {len(attackers):2d}/"
                f"{participants:2d} {defence:18s}",
            )


def _with_relative_quality(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``quality_vs_no_attack``: over the no-attack run of the same suite, participants,
    defence and aggregation."""
    keys = ["suite", "recipe", "participants", "defence", "aggregation"]
    clean = table[table["attack"] == "none"].set_index(keys)["final_quality"]
    index = pd.MultiIndex.from_frame(table[keys])
    table = table.copy()
    table["quality_vs_no_attack"] = (
        table["final_quality"].to_numpy() / clean.reindex(index).to_numpy()
    )
    return table


def plot(table: pd.DataFrame, path: Path) -> None:
    """Quality relative to no attack and attackers paid, by attacker share (extended suite,
    the recipe of its last rows)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    ext = table[(table["suite"] == "extended") & (table["attack"] != "none")]
    ext = ext[ext["recipe"] == ext["recipe"].iloc[-1]]  # one budget: the last one run
    fig, axes = plt.subplots(2, len(COORDINATED_ATTACKS), figsize=(14, 6), sharex=True)
    for col, attack in enumerate(COORDINATED_ATTACKS):
        rows = ext[ext["attack"] == attack]
        for defence, group in rows.groupby("defence"):
            group = group.sort_values("fraction_attackers")
            x = 100 * group["fraction_attackers"]
            axes[0, col].plot(x, group["quality_vs_no_attack"], marker="o", label=defence)
            axes[1, col].plot(x, group["paid_to_attackers"], marker="o", label=defence)
        axes[0, col].set_title(attack)
        axes[0, col].axhline(0.98, color="grey", linestyle=":", linewidth=1)
        axes[1, col].set_xlabel("attackers (% of 20 ESs)")
    axes[0, 0].set_ylabel("final quality / no attack")
    axes[1, 0].set_ylabel("attacker replies paid (2 rounds)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    """Run a suite's scenarios and write (merge) the table and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the table (default benchmarks/results/robustness_<suite>_<experiment>.csv)",
    )
    parser.add_argument("--rounds", type=int, default=NUM_ROUNDS)
    parser.add_argument("--suite", choices=SUITES, default="base")
    parser.add_argument(
        "--experiment",
        default="smoke",
        help="the config the ESs train with: smoke (seconds, the module barely learns) or "
        "default (the main job's model and recipe, a module that learns the rule)",
    )
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="more Hydra overrides (training.local_steps=60)"
    )
    parser.add_argument(
        "--attacks",
        default="",
        help="comma-separated: only these attacks of an extended or "
        "small suite (their rows are replaced, the suite's others kept)",
    )
    args = parser.parse_args()
    only = set(filter(None, args.attacks.split(",")))
    logging.basicConfig(level=logging.ERROR)  # rejections are counted, not logged per reply
    overrides = (
        OVERRIDES
        if args.suite == "base"
        else [f"federation.num_es={EXT_NUM_ES}", f"federation.es_per_round={EXT_NUM_ES}"]
    )
    cfg = load_config(args.experiment, [*overrides, *args.overrides])
    seed_everything(cfg.seed)
    module = agent_module(cfg.model, cfg.seed)
    heldout = heldout_examples(cfg.data, cfg.seed, module.base.is_vision)
    initial = math.exp(-evaluate_quality(module, heldout, cfg.training.eval_batch_size).answer_loss)
    # the local-training recipe: rows are compared with the no-attack row of the same one
    recipe = f"lr {cfg.training.learning_rate:g} {cfg.training.lr_schedule}"
    if args.experiment != "smoke":  # the smoke rows' recipes predate this field
        recipe += f", {args.experiment} experiment, {cfg.training.local_steps} steps"
    args.out = args.out or RESULTS / f"robustness_{args.suite}_{args.experiment}.csv"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = pd.DataFrame()
    if args.out.is_file():
        kept = pd.read_csv(args.out)
        mine = kept["recipe"] == recipe
        if only:
            mine &= kept["attack"].isin(only)
        kept = kept[~mine]
    rows: list[dict] = []
    version = code_version()

    def write(row: dict, label: str) -> None:
        rows.append({**row, "recipe": recipe, "initial_quality": initial, "code_version": version})
        print(f"{label} {row['final_quality']:.4f} {row['status']}", flush=True)
        # rewritten after every scenario: an interrupted run keeps what it measured
        table = _with_relative_quality(pd.concat([kept, pd.DataFrame(rows)], ignore_index=True))
        write_table_atomic(table, args.out)

    if args.suite == "base":
        run_base(args, cfg, module, heldout, write)
    else:
        run_more(args.suite, args, cfg, module, heldout, write, only)
    if args.suite == "extended":
        plot(pd.read_csv(args.out), args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
