"""Who is paid for what: the round's settlement against copying, lazy and hugging attackers.

Command (from the repository root; about 2 minutes a seed on 2 shared cores)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/robustness_settlement.py --seeds 0 1 2
    # the honest updates' similarity in random rounds of 3, 8, 12 and 20 (no table):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/robustness_settlement.py --seeds 0 1 --similarity
    # the quality, effort and dependence clauses over 8 rounds of FedAvg (no table):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/robustness_settlement.py --over-rounds 8

Setup (in the columns of every row of ``benchmarks/results/robustness_settlement.csv``): the
smoke experiment's tiny LLM, 20 ESs (each its own non-IID partition), 16 local steps, one
round from the initial module, every ES contracted to the same work; the last 10/30/45 % of
the ESs attack; the cloud's split is 64 scenes. Attacks: ``benchmarks.attacks`` -- near-copies
of a peer (cosine 0.99, 0.95), exact copies, the mean of two peers, the extrapolation
``2p - q`` of two peers (which makes the honest ``p`` their mean), colluders (one shared
update, or a shared junk direction plus their own noise), threshold-huggers, and ``partial``:
an ES that trains 1-4 of its 16 steps (attacker ``i``: ``1 + i mod 4``) and stretches the
result to its honest update's norm. Defences:

- ``expected``: reply judging against the cloud's expectations
  (``UpdateScreen.judge``), clipping, every kept reply paid in full and weighted equally;
- ``default``: the same, then the round settled as the shipped config settles it
  (``screening.*`` defaults: the dependence clause only, the quality and effort clauses off);
- ``settled``: the same, then the round settled as a set (``fed_agent.screening.settlement``):
  pay and weight = dependence share (copies, near-copies, means of peers:
  ``fed_agent.screening.dependence``) x quality fraction, the gain measured on the cloud's
  split (``fed_agent.modules.reference.update_gains``);
- ``effort``: ``settled`` with the effort clause as well (``screening.effort_clause``: an
  update is paid at most the effort its direction shows along the reference's path,
  ``fed_agent.screening.settlement.effort_fractions``);
- ``plain``: FedAvg of every reply, all paid (the quality baseline).

Columns: ``attacker_paid`` = the attackers' pay in replies' worth (sum of pay fractions);
``attacker_work`` = the work their replies carry in replies' worth (0 for any copy or mean
of peers; ``k/16`` for ``k`` steps stretched; 0.76 for a hugger, whose reply is 0.76x its own
honest update plus junk; 0.76/k for k colluders sending one update); ``honest_cut`` = honest
ESs paid less than in full; ``honest_pay_lost`` = what they lost, in replies' worth;
``quality_vs_no_attack`` = ``exp(-answer loss)`` on the held-out split over the no-attack
run's of the same defence and seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from benchmarks.attacks import PEER_ATTACKS, coordinated_deltas, peer_deltas
from fed_agent.config import load_config
from fed_agent.data.partition import cloud_examples, es_examples, heldout_examples
from fed_agent.evaluation.provenance import stamp
from fed_agent.evaluation.quality import evaluate_quality
from fed_agent.modules.adapter import agent_module
from fed_agent.modules.reference import reference_update, update_gains
from fed_agent.modules.training import learning_effort, train_locally
from fed_agent.outputs import write_table_atomic
from fed_agent.screening.dependence import (
    dependence_shares,
    explained_shares,
    near_copy_classes,
    noise_share_limit,
    own_parts,
    span_coordinates,
    unit_rows,
)
from fed_agent.screening.judge import UpdateScreen
from fed_agent.screening.robust import flatten, unflatten
from fed_agent.screening.settlement import (
    effort_fractions,
    quality_fractions,
    quality_of,
    settle,
)
from fed_agent.seeding import derive_seed, seed_everything

NUM_ES = 20
STEPS = 16
FRACTIONS = (0.1, 0.3, 0.45)
ATTACKS = ("near_copy_99", "near_copy_95", "peer_copy", "peer_mean", "peer_extrapolation")
ATTACKS += ("collude", "collude_noisy", "hug", "partial")
DEFENCES = ("plain", "expected", "default", "settled", "effort")
HUG_WORK = 0.4 * 1.9  # HugParams: cosine 0.4 to its own update, 1.9x its norm
OUT = Path("benchmarks/results/robustness_settlement.csv")


class Round:
    """One seed's round: the module, the honest updates, the reference and the cached gains."""

    def __init__(self, seed: int) -> None:
        overrides = [f"federation.num_es={NUM_ES}", f"federation.es_per_round={NUM_ES}"]
        overrides += [f"training.local_steps={STEPS}", f"seed={seed}"]
        self.cfg = cfg = load_config("smoke", overrides)
        seed_everything(cfg.seed)
        self.module = agent_module(cfg.model, cfg.seed)
        self.global_state = {k: v.copy() for k, v in self.module.initial_state.items()}
        self.origin = flatten(self.global_state, list(self.global_state))
        self.heldout = heldout_examples(cfg.data, cfg.seed, self.module.base.is_vision)
        # the settlement as measured: copies share and the quality clause pays by gain
        self.screen_cfg = dataclasses.replace(cfg.screening, quality_clause=True)
        self.split = cloud_examples(cfg.data, cfg.seed, self.screen_cfg.reference_samples)
        self.honest = np.stack([self._train(es, STEPS) for es in range(NUM_ES)])
        ref_seed = derive_seed(cfg.seed, "reference-update", 1)
        self.reference = reference_update(
            self.module, self.global_state, self.split, cfg.training, STEPS, ref_seed, True
        )
        self.effort = learning_effort(cfg.training.lr_schedule, STEPS)
        self._gains: dict[bytes, float] = {}

    def _train(self, es: int, steps: int) -> np.ndarray:
        self.module.load_adapter(self.global_state)
        data = es_examples(self.cfg.data, self.cfg.seed, es)
        seed = derive_seed(self.cfg.seed, "local-training", es, 1)
        train_locally(self.module, data, self.cfg.training, steps, seed)
        return flatten(self.module.adapter_state(), list(self.global_state)) - self.origin

    def stretched(self, es: int, steps: int, honest: np.ndarray) -> np.ndarray:
        """ES ``es``'s update of ``steps`` steps from the current module, stretched to the norm
        of its ``honest`` one (the ``partial`` attack)."""
        short = self._train(es, steps)
        return short * np.linalg.norm(honest) / np.linalg.norm(short)

    def gains(self, deltas: list[np.ndarray]) -> list[float]:
        """Gains on the cloud's split, measured once per distinct update."""
        keys = [hashlib.sha256(d.tobytes()).digest() for d in deltas]
        todo = [(k, d) for k, d in zip(keys, deltas, strict=True) if k not in self._gains]
        measured = update_gains(
            self.module, self.global_state, [d for _, d in todo], self.split, 64
        )
        self._gains.update({k: g for (k, _), g in zip(todo, measured, strict=True)})
        return [self._gains[k] for k in keys]

    def attacked(self, attack: str, attackers: list[int]) -> tuple[np.ndarray, float]:
        """The round's updates with the attackers' replaced, and the work those carry."""
        sent = self.honest.copy()
        if not attackers:
            return sent, 0.0
        rng = np.random.default_rng(derive_seed(self.cfg.seed, "attack", attack))
        own = [self.honest[i] for i in attackers]
        peers = [self.honest[i] for i in range(NUM_ES) if i not in attackers]
        work = 0.0
        if attack == "partial":
            for n, i in enumerate(attackers):
                steps = 1 + n % 4
                sent[i] = self.stretched(i, steps, self.honest[i])
                work += steps / STEPS
            return sent, work
        if attack in PEER_ATTACKS:
            replaced = peer_deltas(attack, own, peers, rng)
            work = HUG_WORK * len(attackers) if attack == "collude_noisy" else 0.0
        else:
            replaced = coordinated_deltas(attack, own, peers[0], rng)
            work = {"collude": HUG_WORK, "hug": HUG_WORK * len(attackers)}.get(attack, 0.0)
        for i, delta in zip(attackers, replaced, strict=True):
            sent[i] = delta
        return sent, work

    def quality(self, delta: np.ndarray) -> float:
        """``exp(-answer loss)`` on the held-out split of the module after the round."""
        self.module.load_adapter(unflatten(self.origin + delta, self.global_state))
        loss = evaluate_quality(self.module, self.heldout, 64).answer_loss
        return math.exp(-loss)


def run(r: Round, attack: str, attackers: list[int], defence: str) -> dict:
    """One scenario: pay per reply, the aggregate's quality."""
    sent, work = r.attacked(attack, attackers)
    pay = np.ones(NUM_ES)
    if defence == "plain":
        return _row(r.quality(sent.mean(axis=0)), pay, attackers, work, 0)
    screen = UpdateScreen(r.screen_cfg)
    judged = screen.judge(list(sent), [r.effort] * NUM_ES, r.reference)
    kept = [i for i, j in enumerate(judged) if j.kept]
    pay[[i for i in range(NUM_ES) if i not in kept]] = 0.0
    clipped = [screen.clip(sent[i], r.effort, r.reference) for i in kept]
    if defence in ("default", "settled", "effort") and kept:
        expected = [screen.expected_norm(r.effort, r.reference)] * len(kept)
        cfg = dataclasses.replace(r.screen_cfg, effort_clause=defence == "effort")
        if defence == "default":
            cfg = r.cfg.screening
        efforts = [r.effort] * len(kept)
        gains = r.gains(clipped) if cfg.quality_clause else [0.0] * len(kept)
        settled = settle(clipped, gains, expected, cfg, efforts, r.reference.path)
        pay[kept] = [s.pay_fraction for s in settled]
    weights = pay[kept]
    if not kept or weights.sum() <= 0:
        return _row(r.quality(np.zeros_like(r.origin)), pay, attackers, work, NUM_ES - len(kept))
    aggregate = np.average(np.stack(clipped), axis=0, weights=weights)
    return _row(r.quality(aggregate), pay, attackers, work, NUM_ES - len(kept))


def _row(quality: float, pay: np.ndarray, attackers: list[int], work: float, rejected: int):
    honest = np.delete(pay, attackers)
    return {
        "final_quality": quality,
        "attacker_replies": len(attackers),
        "attacker_paid": float(pay[attackers].sum()) if attackers else 0.0,
        "attacker_work": work,
        "honest_cut": int(np.sum(honest < 1 - 1e-9)),
        "honest_pay_lost": float(np.sum(1 - honest)),
        "rejected_replies": rejected,
    }


def honest_similarity(r: Round, sizes: list[int], samples: int = 150) -> None:
    """Print how close the seed's honest updates are, in random rounds of each size: the
    largest pairwise cosine, the smallest share of a close pair's difference the other updates
    explain (``fed_agent.screening.dependence``) against the noise limit, and in how many
    rounds honest pairs would be taken for near-copies were such rounds searched."""
    cfg = dataclasses.replace(r.screen_cfg, near_copy_min_updates=3)
    rng = np.random.default_rng(r.cfg.seed)
    units = unit_rows(list(r.honest))
    for size in sizes:
        least, cosine, flagged = 1.0, 0.0, 0
        for _ in range(samples):
            pick = np.sort(rng.choice(NUM_ES, size, replace=False))
            gram = units[pick] @ units[pick].T
            cosine = max(cosine, float(gram[np.triu_indices(size, 1)].max()))
            shares = explained_shares(units[pick], cfg.dependence_tolerance, cfg.near_copy_cosine)
            least = min([least, *shares.values()])
            flagged += any(len(c) > 1 for c in near_copy_classes(units[pick], cfg))
        limit = noise_share_limit(size - 2, units.shape[1], cfg.near_copy_sigmas)
        print(
            f"seed {r.cfg.seed} rounds of {size:2d}: max cosine {cosine:.3f}, least explained "
            f"{least:.4f} (limit {limit:.4f}), honest near-copies in {flagged}/{samples} rounds"
        )
    for attack in ("near_copy_99", "near_copy_95"):  # the last ES's reply: a copy of the first's
        sent, _ = r.attacked(attack, [NUM_ES - 1])
        shares = explained_shares(unit_rows(list(sent)), cfg.dependence_tolerance, 0.0)
        print(f"seed {r.cfg.seed} {attack}: explained {shares[(0, NUM_ES - 1)]:.4f}")
    units = unit_rows(list(r.honest))
    coords = span_coordinates(units)
    apart = [nnls(np.delete(coords, i, axis=0).T, coords[i])[1] for i in range(NUM_ES)]
    print(
        f"seed {r.cfg.seed}: honest updates from the cone of the other {NUM_ES - 1} "
        f"{min(apart):.3f}-{max(apart):.3f}"
    )
    for name, made in (
        ("mean", lambda p, q: (p + q) / 2),
        ("extrapolation", lambda p, q: 2 * p - q),
    ):
        cosines = []  # own parts (off the round's other updates) of the triple p, q, made
        for a in range(6):
            p, q = r.honest[2 * a], r.honest[2 * a + 1]
            others = np.delete(units, [2 * a, 2 * a + 1], axis=0)
            own = own_parts(unit_rows([p, q, made(p, q)]), others)
            own /= np.linalg.norm(own, axis=1, keepdims=True)
            cosines.append((own[2] @ own[0], own[2] @ own[1], own[0] @ own[1]))
        made_to_peers = [c for x in cosines for c in x[:2]]
        print(
            f"seed {r.cfg.seed} {name} of two peers p, q: own part's cosine to p's and q's "
            f"{min(made_to_peers):.2f}-{max(made_to_peers):.2f}, p's to q's "
            f"{min(x[2] for x in cosines):.2f}-{max(x[2] for x in cosines):.2f}"
        )


def over_rounds(r: Round, rounds: int) -> None:
    """Print, for each of ``rounds`` rounds of FedAvg of the seed's honest ESs: their gains on
    the cloud's split over the round's median (the quality clause's measure with equal
    efforts) and how many of them the clause would pay less than in full; the same for the
    effort clause and the quality clause, and what each pays the last 30 % when they stretch 1-4
    of their steps (in a round of the others' honest updates); the
    honest ESs the dependence clause pays less than in full, alone and with the last 30 %
    sending near-copies or means of the others, and what those attackers are paid."""
    attackers = list(range(NUM_ES - round(0.3 * NUM_ES), NUM_ES))
    effort_cfg = dataclasses.replace(r.screen_cfg, effort_clause=True)
    for done in range(1, rounds + 1):
        updates = [r._train(es, STEPS) for es in range(NUM_ES)]
        gains = update_gains(r.module, r.global_state, updates, r.split, 64)
        ratios = quality_of(gains, [1.0] * NUM_ES, r.screen_cfg)
        cut = int(np.sum(ratios < 1 - r.screen_cfg.quality_tolerance))
        ref_seed = derive_seed(r.cfg.seed, "reference-update", done)
        path = reference_update(
            r.module, r.global_state, r.split, r.cfg.training, STEPS, ref_seed, True
        ).path
        efforts = [r.effort] * NUM_ES
        shown = effort_fractions(updates, efforts, path, effort_cfg)
        stretched = list(updates)
        for n, i in enumerate(attackers):
            stretched[i] = r.stretched(i, 1 + n % 4, updates[i])
        caught = effort_fractions(stretched, efforts, path, effort_cfg)
        mixed = np.array(gains)
        mixed[attackers] = update_gains(
            r.module, r.global_state, [stretched[i] for i in attackers], r.split, 64
        )
        by_gain = quality_fractions(quality_of(mixed, [1.0] * NUM_ES, r.screen_cfg), r.screen_cfg)
        alone = dependence_shares(updates, r.screen_cfg)
        line = (
            f"seed {r.cfg.seed} round {done}: gain over the median {ratios.min():.3f}-"
            f"{ratios.max():.3f}, honest cut by the quality clause {cut}/{NUM_ES}, by the "
            f"effort clause {int(np.sum(shown < 1))} (stretched 1-4 of {STEPS} steps: paid "
            f"{caught[attackers].sum():.2f} of {len(attackers)}, honest cut "
            f"{int(np.sum(np.delete(caught, attackers) < 1))}; by the quality clause paid "
            f"{by_gain[attackers].sum():.2f}, honest cut "
            f"{int(np.sum(np.delete(by_gain, attackers) < 1))}), by dependence "
            f"{int(np.sum(alone < 1 - 1e-9))}"
        )
        rng = np.random.default_rng(derive_seed(r.cfg.seed, "attack-over-rounds", done))
        honest = [u for i, u in enumerate(updates) if i not in attackers]
        for attack in ("near_copy_99", "near_copy_95", "peer_mean"):
            sent = honest + peer_deltas(attack, [updates[i] for i in attackers], honest, rng)
            shares = dependence_shares(sent, r.screen_cfg)
            line += (
                f"; {attack}: honest cut {int(np.sum(shares[: len(honest)] < 1 - 1e-9))}, "
                f"attackers paid {shares[len(honest) :].sum():.2f}"
            )
        print(line, flush=True)
        r.origin = r.origin + np.mean(updates, axis=0)
        r.global_state = unflatten(r.origin, r.global_state)


def main() -> None:
    """Run every attack x fraction x defence for each seed; write the table (``--similarity``:
    print the honest updates' similarity instead)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--attacks", nargs="*", default=list(ATTACKS))
    parser.add_argument("--similarity", type=int, nargs="*", metavar="ROUND_SIZE")
    parser.add_argument("--over-rounds", type=int, metavar="ROUNDS")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.over_rounds:
        for seed in args.seeds:
            over_rounds(Round(seed), args.over_rounds)
        return
    if args.similarity is not None:
        for seed in args.seeds:
            honest_similarity(Round(seed), args.similarity or [3, 8, 12, 20])
        return
    rows: list[dict] = []
    started = time.perf_counter()
    for seed in args.seeds:
        r = Round(seed)
        scenarios = [("none", [])] + [
            (a, list(range(NUM_ES - round(f * NUM_ES), NUM_ES)))
            for a in args.attacks
            for f in FRACTIONS
        ]
        for attack, attackers in scenarios:
            for defence in DEFENCES:
                row = run(r, attack, attackers, defence)
                rows.append(
                    {
                        "seed": seed,
                        "attack": attack,
                        "fraction_attackers": len(attackers) / NUM_ES,
                        "defence": defence,
                        **row,
                        "participants": NUM_ES,
                        "rounds": 1,
                        "local_steps": STEPS,
                        "experiment": "smoke",
                    }
                )
                print(
                    f"{time.perf_counter() - started:7.1f}s {seed} {attack:13s} "
                    f"{len(attackers):2d} {defence:8s} paid {row['attacker_paid']:.2f} "
                    f"work {row['attacker_work']:.2f} cut {row['honest_cut']} "
                    f"q {row['final_quality']:.5f}",
                    flush=True,
                )
                table = pd.DataFrame(stamp(rows))
                clean = table[table["attack"] == "none"].set_index(["seed", "defence"])
                index = pd.MultiIndex.from_frame(table[["seed", "defence"]])
                table["quality_vs_no_attack"] = (
                    table["final_quality"].to_numpy()
                    / clean["final_quality"].reindex(index).to_numpy()
                )
                write_table_atomic(table, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
