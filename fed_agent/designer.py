"""The contract designer: the only module that joins the contract model and the RL package.

A :class:`ContractDesigner` turns markets into two-period dynamic contracts with a learned
policy (EDMSAC by default) and trains that policy on the decision process of
docs/contract-model.md ("The designer as a decision process"):

- state: :func:`state_features` of the market, normalised to about [-1, 1];
- action: a point of [-1, 1]^(K + K^2), mapped by :func:`actions_to_menus` to a menu of
  computing resources f that rises with the type in every period (the minimal payment rule
  then gives the rewards R);
- reward: the cloud utility of the resulting contract (:func:`designer_reward`);
- episodes of one step; markets drawn from ``MarketRanges`` (or one fixed named market).

One designer serves one number of types K (state and action widths depend on K); train one
designer per K. docs/designer.md explains each choice and reports the measured results.

The contract maths that works on many markets at once (:class:`MarketBatch`,
:func:`score_menus`, ...) lives in ``fed_agent.contracts.batch``, so that
:meth:`ContractDesigner.propose` designs contracts for a thousand markets in one pass; this
module keeps only what faces the learner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from fed_agent.choices import check_choice
from fed_agent.contracts import (
    DynamicContract,
    Market,
    MarketBatch,
    MarketRanges,
    ScoredMenus,
    cloud_utility_batch,
    complete_information_utility,
    minimal_payments,
    named_market,
    sample_market,
    score_f_menus,
    score_menus,
)
from fed_agent.contracts.solvers import optimal_contract
from fed_agent.rl.checkpoint import load_checkpoint, save_checkpoint
from fed_agent.rl.diffusion_actor import DiffusionActor
from fed_agent.rl.gaussian_sac import GaussianSAC, GaussianSACConfig
from fed_agent.rl.ppo import PPO, PPOConfig, RolloutBatch
from fed_agent.rl.pruning import active_neuron_fraction, compact_denoiser
from fed_agent.rl.replay import ReplayBuffer, one_step_batch
from fed_agent.rl.sac import DiffusionSAC, EDMSACConfig
from fed_agent.rl.schedules import NoiseSchedule, make_schedule
from fed_agent.seeding import derive_seed, torch_generator

DESIGNERS = ("edmsac", "dmsac", "sac", "ppo")
TRAINING_RANGES = {
    "random": MarketRanges(),
    # the neighbourhood of the default market that a federated run designs for: the default
    # economics, with each ES's workload, module upload and the cloud's belief about its type
    # (the prior) varying
    "federation": MarketRanges(
        theta_min=(0.2, 0.2),
        theta_span=(1.8, 1.8),
        prior_concentration=1.0,
        transition_stay=(0.7, 0.7),
        discount=(0.9, 0.9),
        workload_gcycles=(10.0, 30.0),
        module_bytes=(5e4, 2e7),
        kappa=(0.2, 0.2),
        omega=(30.0, 30.0),
        t_max_s=(25.0, 25.0),
    ),
}
TRAINING_MARKETS = (*TRAINING_RANGES, "default", "paper")
FEATURE_RANGES = MarketRanges()
CHECKPOINT_VERSION = 1
MARKET_KEY, HELDOUT_KEY, TORCH_KEY = 2, 3, 4  # seed-stream keys (1 was the old proposal noise)
HistoryRow = dict[str, float]


@dataclass
class DesignerConfig:
    """How a designer is trained: the schema of the ``designer`` config group.

    The learner's own hyperparameters are the nested ``edmsac`` (also used by ``dmsac``,
    with pruning switched off), ``sac`` and ``ppo`` configs.
    """

    algorithm: str = "edmsac"
    """which learner designs the menus: edmsac, dmsac, sac or ppo"""
    market: str = "random"
    """training markets: random or federation (drawn from TRAINING_RANGES), or a named market"""
    num_types: int = 3
    """K, the number of willingness types (taken from the named market when one is set)"""
    env_steps: int = 32_768
    """training budget in environment steps (one step = one market, one menu)"""
    num_envs: int = 64
    """markets designed in parallel per iteration"""
    updates_per_iteration: int = 2
    """gradient steps of an off-policy learner per iteration"""
    warmup_env_steps: int = 2_048
    """uniformly random menus before the policy acts (off-policy learners)"""
    reward_scale_frac: float = 0.1
    """reward unit, as a fraction of omega ln(1 + T_max)"""
    violation_penalty: float = 1.0
    """reward subtracted per violated constraint of a menu the closed form cannot implement"""
    eval_interval: int = 2_048
    """environment steps between evaluations during training"""
    eval_markets: int = 16
    """held-out markets evaluated when training on random markets"""
    keep_best: bool = True
    """end training with the learner of the best evaluation on the designer's own validation
    markets (the named market, or held-out markets from the training ranges): later updates
    can drift off a good menu, and the cloud can score a menu exactly, so it keeps the best"""
    online_updates: int = 0
    """gradient steps per observe() call (0 = no online fine-tuning)"""
    seed: int = 0
    """seed of everything the designer draws"""
    edmsac: EDMSACConfig = field(default_factory=EDMSACConfig)
    sac: GaussianSACConfig = field(default_factory=GaussianSACConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self) -> None:
        check_choice("designer", self.algorithm, DESIGNERS)
        check_choice("training market", self.market, TRAINING_MARKETS)
        if self.market not in TRAINING_RANGES:
            self.num_types = named_market(self.market).num_types
        if self.num_types < 2 or self.num_envs < 1 or self.env_steps < 1:
            raise ValueError("need num_types >= 2, num_envs >= 1 and env_steps >= 1")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DesignerConfig:
        """Rebuild a config from :func:`dataclasses.asdict` output (e.g. a checkpoint)."""
        nested = {"edmsac": EDMSACConfig, "sac": GaussianSACConfig, "ppo": PPOConfig}
        plain = {k: v for k, v in values.items() if k not in nested}
        return cls(**plain, **{k: t(**values[k]) for k, t in nested.items() if k in values})


# ----------------------------------------------------------------------------- markets


def state_features(batch: MarketBatch, ranges: MarketRanges = FEATURE_RANGES) -> np.ndarray:
    """The normalised state of each market, shape (B, 3K + K^2 + 6), float32.

    Columns: theta (K), prior (K), transition (K^2), discount, workload W, upload time S/r,
    kappa, omega, T_max, and the complete-information efficient f per type (K), which is a
    closed-form summary of how costs and value trade off. Every quantity is mapped linearly
    from the range that ``ranges`` allows (by default the broad ``MarketRanges()``, the same
    for every designer whatever it was trained on) to [-1, 1] (probabilities from [0, 1]; upload time
    from [0, 0.5] s; f from [f_lo, f_hi]); values outside the ranges stay finite.
    """
    theta_hi = ranges.theta_min[1] + ranges.theta_span[1]

    def unit(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
        return 2 * (x - lo) / (hi - lo) - 1

    f_lo, f_hi = batch.f_lo[:, None], batch.f_hi[:, None]
    columns = [
        unit(batch.types, ranges.theta_min[0], theta_hi),
        unit(batch.prior, 0.0, 1.0),
        unit(batch.transition.reshape(batch.size, -1), 0.0, 1.0),
        unit(batch.discount[:, None], *ranges.discount),
        unit(batch.workload[:, None], *ranges.workload_gcycles),
        unit(batch.upload_s[:, None], 0.0, 0.5),
        unit(batch.kappa[:, None], *ranges.kappa),
        unit(batch.omega[:, None], *ranges.omega),
        unit(batch.t_max[:, None], *ranges.t_max_s),
        unit(batch.efficient_resource(), f_lo, f_hi),
    ]
    return np.concatenate(columns, axis=1).astype(np.float32)


def state_dim(num_types: int) -> int:
    """Width of :func:`state_features` for K types."""
    return 3 * num_types + num_types**2 + 6


def action_dim(num_types: int) -> int:
    """Width of an action, K + K^2 (one f per menu item; R follows from the payment rule)."""
    return num_types + num_types**2


# ----------------------------------------------------------------------- action <-> menu


def _rising(u: np.ndarray, floor: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """f_k = f_{k-1} + u_k (cap_k - f_{k-1}), f_0 = floor: shapes (B, M, K), (B, 1), (B, K)."""
    f = np.empty_like(u)
    previous = np.broadcast_to(floor[:, None], u.shape[:2]).copy()
    for k in range(u.shape[-1]):
        previous = previous + u[..., k] * (caps[:, None, k] - previous)
        f[..., k] = previous
    return f


def actions_to_menus(actions: np.ndarray, batch: MarketBatch) -> tuple[np.ndarray, np.ndarray]:
    """Map actions in [-1, 1]^(K + K^2) to menus of computing resources (the one boundary).

    Each of the K + 1 menus (period 1, and period 2 after each report) is built from the
    lowest type up: u = (a + 1) / 2 in [0, 1] is the fraction of the remaining gap between
    the previous type's f (f_lo for the lowest type) and this type's complete-information
    efficient f that the type gets, f_k = f_{k-1} + u_k (f_eff_k - f_{k-1}). So every action
    is a menu that rises with the type (necessary for incentive compatibility) and stays
    below the efficient level (where the optimum lies: information rents only distort f
    downwards), and every such menu is reached by exactly one action.

    Parameters
    ----------
    actions : np.ndarray
        Shape (B, K + K^2), period-1 coordinates first, then period 2 row by row.
    batch : MarketBatch
        The B markets.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        f1 of shape (B, K) and f2 of shape (B, K, K), in GHz.
    """
    k = batch.num_types
    u = (np.clip(np.asarray(actions, dtype=float), -1.0, 1.0) + 1.0) / 2.0
    menus = _rising(u.reshape(batch.size, k + 1, k), batch.f_lo, batch.efficient_resource())
    return menus[:, 0], menus[:, 1:]


def menus_to_actions(f1: np.ndarray, f2: np.ndarray, batch: MarketBatch) -> np.ndarray:
    """Inverse of :func:`actions_to_menus` (menus outside its image are projected onto it)."""
    caps = batch.efficient_resource()
    menus = np.concatenate([f1[:, None, :], f2], axis=1)
    u = np.zeros_like(menus)
    previous = np.broadcast_to(batch.f_lo[:, None], menus.shape[:2])
    for k in range(menus.shape[-1]):
        room = caps[:, None, k] - previous
        safe = np.where(room > 1e-12, room, 1.0)
        u[..., k] = np.where(room > 1e-12, np.clip((menus[..., k] - previous) / safe, 0, 1), 0.0)
        previous = previous + u[..., k] * room
    return (2 * u - 1).reshape(batch.size, -1)


# ------------------------------------------------------------------ reward and proposals


def designer_reward(
    utility: np.ndarray,
    violations: np.ndarray,
    batch: MarketBatch,
    scale_frac: float,
    penalty: float,
) -> np.ndarray:
    """The learning signal of one-step episodes, (B,).

    (U - U_complete_information) / (scale_frac * omega ln(1 + T_max)) - penalty * violations.
    Subtracting the closed-form complete-information utility centres rewards per market
    (it is a market-dependent constant, so the optimal menu does not change) and the unit
    omega ln(1 + T_max), the most one period of work can be worth, makes markets of
    different value scales comparable; the optimum is never used. A menu that the closed
    form cannot implement is scored with its (too optimistic) closed-form utility minus a
    penalty per violated constraint.
    """
    scale = scale_frac * batch.omega * np.log1p(batch.t_max)
    centred = (utility - complete_information_utility(batch)) / scale
    return centred - penalty * violations


@dataclass(frozen=True)
class ProposedMenus:
    """Contracts for B markets as stacked arrays.

    Attributes
    ----------
    f1, r1 : np.ndarray
        (B, K) period-1 resources and rewards.
    f2, r2 : np.ndarray
        (B, K, K) period-2 resources and rewards.
    certified : np.ndarray
        (B,) rewards from the certified closed form (else from the LP).
    replaced : np.ndarray
        (B,) the designed menu was not implementable and the safe contract was used.
    """

    f1: np.ndarray
    r1: np.ndarray
    f2: np.ndarray
    r2: np.ndarray
    certified: np.ndarray
    replaced: np.ndarray

    def contracts(self) -> list[DynamicContract]:
        """The rows as validated :class:`DynamicContract` objects."""
        return [
            DynamicContract(self.f1[b], self.r1[b], self.f2[b], self.r2[b])
            for b in range(self.f1.shape[0])
        ]


def _safe_contract(market: Market) -> DynamicContract:
    """Everyone gets f_lo paid its cost to the least willing type: always implementable."""
    k = market.num_types
    f = np.full(k * (k + 1), market.f_lower_ghz)
    reward = market.kappa * market.workload_gcycles * market.f_lower_ghz**2 / market.types[0]
    return DynamicContract.from_flat(f, np.full_like(f, reward), k)


# ------------------------------------------------------------------------------ learners


class Learner(Protocol):
    """What the designer needs of a learner (all of fed_agent.rl's learners fit)."""

    def begin_episode(self, probe_states: Tensor) -> dict[str, float]: ...

    def update(self, batch: Any) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, dict[str, Tensor]]: ...

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None: ...


def build_learner(config: DesignerConfig, seed: int) -> Learner:
    """The learner named by ``config.algorithm`` for K = ``config.num_types``."""
    dims = (state_dim(config.num_types), action_dim(config.num_types))
    name = check_choice("designer", config.algorithm, DESIGNERS)
    if name == "edmsac":
        return DiffusionSAC(*dims, config.edmsac, seed)
    if name == "dmsac":
        return DiffusionSAC(
            *dims, EDMSACConfig(**{**asdict(config.edmsac), "prune_rate": 0.0}), seed
        )
    if name == "sac":
        return GaussianSAC(*dims, config.sac, seed)
    if name == "ppo":
        return PPO(*dims, config.ppo, seed)
    raise AssertionError(f"unreachable: {name}")


@dataclass(frozen=True)
class EvaluationSet:
    """Markets with their exact optimal utility, for measuring utility ratios."""

    markets: list[Market]
    optimum: np.ndarray

    @classmethod
    def solve(cls, markets: Sequence[Market]) -> EvaluationSet:
        """Compute the exact optimum of every market (the reference solver)."""
        return cls(list(markets), np.array([optimal_contract(m).cloud_utility for m in markets]))


def heldout_markets(ranges: MarketRanges, num_types: int, count: int, seed: int) -> list[Market]:
    """``count`` random markets from a seed stream disjoint from training's.

    Only markets where contracting pays (positive optimal utility) are kept, so that the
    utility ratio U / U* is meaningful.
    """
    rng = np.random.default_rng(derive_seed(seed, HELDOUT_KEY))
    markets: list[Market] = []
    while len(markets) < count:
        market = sample_market(rng, ranges, num_types)
        if optimal_contract(market).cloud_utility > 0:
            markets.append(market)
    return markets


# ------------------------------------------------------------------------------ designer


class ContractDesigner:
    """Designs two-period dynamic contracts for markets with a learned policy.

    Parameters
    ----------
    config : DesignerConfig
        Which learner, how it is trained, K.
    ranges : MarketRanges, optional
        The random markets it is trained for (default: ``TRAINING_RANGES[config.market]``,
        or the broad ``MarketRanges()`` for a named market).
    """

    def __init__(self, config: DesignerConfig, ranges: MarketRanges | None = None) -> None:
        self.config = config
        self.ranges = ranges or TRAINING_RANGES.get(config.market, FEATURE_RANGES)
        self.num_types = config.num_types
        self.learner = build_learner(config, derive_seed(config.seed, TORCH_KEY))
        self.buffer = self._make_buffer()

    @property
    def name(self) -> str:
        """The learner's name (edmsac, dmsac, sac, ppo)."""
        return self.config.algorithm

    def _make_buffer(self) -> ReplayBuffer:
        size = self.config.sac.buffer_size if self.name == "sac" else self.config.edmsac.buffer_size
        return ReplayBuffer(size, state_dim(self.num_types), action_dim(self.num_types))

    # -------------------------------------------------------------- acting

    def states(self, batch: MarketBatch) -> Tensor:
        """State features as a tensor, (B, state_dim)."""
        return torch.from_numpy(state_features(batch))

    @torch.no_grad()
    def policy_actions(self, states: Tensor) -> Tensor:
        """Deterministic proposals: the noise-free reverse chain (diffusion) or the mean action.

        A diffusion learner proposes with its Polyak-averaged target actor (the EMA model
        that Diffusion-QL samples from), pruned and compacted to its active neurons: the
        average of recent actors is steadier than the latest one, which chases its critic.
        Its chain starts at x_T = 0 and takes every posterior mean
        (:meth:`DiffusionActor.sample_mean_path`): no random numbers, so a market gets the same
        menu in any batch.
        """
        learner = self.learner
        if isinstance(learner, DiffusionSAC):
            actor = DiffusionActor(
                compact_denoiser(learner.actor_target.denoiser),
                _schedule_of(learner),
                prediction=learner.config.prediction,
            )
            return actor.sample_mean_path(states)
        if isinstance(learner, GaussianSAC):
            return learner.act(states, deterministic=True)
        if isinstance(learner, PPO):
            return learner.act(states, deterministic=True)
        raise TypeError(f"no deterministic policy for {type(learner).__name__}")

    def design(self, markets: Sequence[Market]) -> tuple[MarketBatch, np.ndarray, np.ndarray]:
        """Menus of f for ``markets``: the batch, f1 (B, K) and f2 (B, K, K)."""
        self._check_markets(markets)
        batch = MarketBatch.from_markets(markets)
        actions = self.policy_actions(self.states(batch)).numpy().astype(float)
        f1, f2 = actions_to_menus(actions, batch)
        return batch, f1, f2

    def propose_batch(self, markets: Sequence[Market]) -> ProposedMenus:
        """Contracts for ``markets`` as stacked arrays, designed in one batched pass.

        The fast path for many markets (the Flower strategy, the timing benchmark): menus
        from the policy, least-cost rewards in closed form where certified, the minimal
        payment LP for the rest, the safe contract where even the LP finds none.

        Parameters
        ----------
        markets : Sequence[Market]
            B markets with K = ``num_types`` types.

        Returns
        -------
        ProposedMenus
            f1, r1 (B, K); f2, r2 (B, K, K); certified and replaced masks (B,).
        """
        batch, f1, f2 = self.design(markets)
        scored = score_menus(f1, f2, batch)
        r1, r2 = np.maximum(scored.r1, 0.0), np.maximum(scored.r2, 0.0)
        f1, f2 = f1.copy(), f2.copy()
        replaced = np.zeros(batch.size, dtype=bool)
        for row in np.flatnonzero(~scored.certified):
            contract = minimal_payments(f1[row], f2[row], markets[row])
            if contract is None:
                contract, replaced[row] = _safe_contract(markets[row]), True
            f1[row], r1[row], f2[row], r2[row] = contract.f1, contract.r1, contract.f2, contract.r2
        return ProposedMenus(f1, r1, f2, r2, scored.certified, replaced)

    def propose(self, markets: Sequence[Market]) -> list[DynamicContract]:
        """One implementable contract per market (see :meth:`propose_batch`).

        Parameters
        ----------
        markets : Sequence[Market]
            Markets with K = ``num_types`` types.

        Returns
        -------
        list[DynamicContract]
            Least-cost rewards for the designed menus.
        """
        return self.propose_batch(markets).contracts()

    def _check_markets(self, markets: Sequence[Market]) -> None:
        if not markets:
            raise ValueError("propose needs at least one market")
        wrong = {m.num_types for m in markets} - {self.num_types}
        if wrong:
            raise ValueError(
                f"this designer serves K = {self.num_types} types, got markets with K = {wrong}"
            )

    # ------------------------------------------------------------ training

    def _training_markets(self, rng: np.random.Generator, count: int) -> list[Market]:
        if self.config.market in TRAINING_RANGES:
            return [sample_market(rng, self.ranges, self.num_types) for _ in range(count)]
        return [named_market(self.config.market)] * count

    def evaluation_set(self) -> EvaluationSet:
        """The markets training reports on: the named market, or held-out random ones."""
        if self.config.market in TRAINING_RANGES:
            markets = heldout_markets(
                self.ranges, self.num_types, self.config.eval_markets, self.config.seed
            )
            return EvaluationSet.solve(markets)
        return EvaluationSet.solve([named_market(self.config.market)])

    def train(
        self,
        evaluation: EvaluationSet | None = None,
        on_progress: Callable[[int, HistoryRow], None] | None = None,
    ) -> list[HistoryRow]:
        """Train for ``config.env_steps`` environment steps; returns the evaluation history.

        Parameters
        ----------
        evaluation : EvaluationSet, optional
            Markets to evaluate on every ``eval_interval`` steps (default:
            :meth:`evaluation_set`).
        on_progress : callable, optional
            Called as on_progress(env_steps_done_this_iteration, metrics) after every
            iteration (for a progress bar and a metrics log).

        Returns
        -------
        list[dict[str, float]]
            One row per evaluation: env_steps, utility_ratio, violations, kept_env_steps ...;
            with ``config.keep_best`` one more last row: the learner kept (the best on the
            validation markets, restored).
        """
        keep_best = self.config.keep_best
        validation = self.evaluation_set() if keep_best or evaluation is None else None
        evaluation = evaluation or validation
        rng = np.random.default_rng(derive_seed(self.config.seed, MARKET_KEY))
        generator = torch_generator(derive_seed(self.config.seed, MARKET_KEY))
        history = [{"env_steps": 0.0, **self.evaluate(evaluation)}]
        if keep_best:  # (validation ratio, env steps, learner state) of the best evaluation
            ratio = self._validation_ratio(validation, evaluation, history[-1])
            best = (ratio, 0.0, _snapshot(self.learner))
        steps, next_eval, rollout = 0, self.config.eval_interval, _Rollout()
        while steps < self.config.env_steps:
            metrics = self._iteration(rng, generator, steps, rollout)
            steps += self.config.num_envs
            if steps >= next_eval or steps >= self.config.env_steps:
                history.append({"env_steps": float(steps), **self.evaluate(evaluation)})
                if keep_best:
                    ratio = self._validation_ratio(validation, evaluation, history[-1])
                    if ratio > best[0]:
                        best = (ratio, float(steps), _snapshot(self.learner))
                metrics |= {f"eval/{k}": v for k, v in history[-1].items()}
                next_eval += self.config.eval_interval
            if on_progress is not None:
                on_progress(self.config.num_envs, metrics)
        kept_steps = float(steps)
        if keep_best:
            # the last row is always the learner that training ends with
            kept_steps = best[1]
            if kept_steps < steps:
                self.learner.load_state_dict(best[2])
            history.append({"env_steps": float(steps), **self.evaluate(evaluation)})
        for row in history:
            row["kept_env_steps"] = kept_steps
        return history

    def _validation_ratio(
        self, validation: EvaluationSet, evaluation: EvaluationSet, row: HistoryRow
    ) -> float:
        """The utility ratio that model selection compares (never the caller's test set,
        unless it is the validation set itself)."""
        if validation.markets == evaluation.markets:
            return row["utility_ratio"]
        return self.evaluate(validation)["utility_ratio"]

    def _iteration(
        self, rng: np.random.Generator, generator: torch.Generator, steps: int, rollout: _Rollout
    ) -> HistoryRow:
        """One batch of one-step episodes and the learner's updates; namespaced metrics."""
        markets = self._training_markets(rng, self.config.num_envs)
        batch = MarketBatch.from_markets(markets)
        states = self.states(batch)
        metrics = {f"designer/{k}": v for k, v in self.learner.begin_episode(states).items()}
        actions, log_probs = self._explore(states, generator, steps)
        f1, f2 = actions_to_menus(actions.clamp(-1, 1).numpy().astype(float), batch)
        scored = self._score_for_training(f1, f2, batch, markets)
        reward = designer_reward(
            scored.utility,
            scored.violations,
            batch,
            self.config.reward_scale_frac,
            self.config.violation_penalty,
        )
        rewards = torch.from_numpy(reward.astype(np.float32))
        metrics["designer/reward"] = float(reward.mean())
        metrics["designer/feasible_frac"] = float(np.mean(scored.violations == 0))
        if isinstance(self.learner, PPO):
            rollout.add(states, actions, log_probs, rewards)
            if rollout.size >= self.config.ppo.rollout_size:
                metrics |= _namespaced(self.learner.update(rollout.pop()))
            return metrics
        self.buffer.add(one_step_batch(states, actions, rewards))
        if steps + self.config.num_envs > self.config.warmup_env_steps:
            for _ in range(self.config.updates_per_iteration):
                batch_size = self._batch_size()
                metrics |= _namespaced(
                    self.learner.update(self.buffer.sample(batch_size, generator))
                )
        return metrics

    def _batch_size(self) -> int:
        """Transitions per off-policy gradient step, from the learner's own config."""
        return self.config.sac.batch_size if self.name == "sac" else self.config.edmsac.batch_size

    def _explore(
        self, states: Tensor, generator: torch.Generator, steps: int
    ) -> tuple[Tensor, Tensor | None]:
        """Behaviour actions: uniform during warm-up, then the learner's stochastic policy."""
        learner = self.learner
        if isinstance(learner, PPO):
            return learner.explore(states)
        if steps < self.config.warmup_env_steps:
            return torch.rand(
                states.shape[0], action_dim(self.num_types), generator=generator
            ) * 2 - 1, None
        return learner.act(states), None

    def _score_for_training(
        self, f1: np.ndarray, f2: np.ndarray, batch: MarketBatch, markets: Sequence[Market]
    ) -> ScoredMenus:
        """Fast closed-form scores; markets outside the closed form use the contracts path."""
        scored = score_menus(f1, f2, batch)
        if bool(batch.closed_form.all()):
            return scored
        utility, violations = scored.utility.copy(), scored.violations.copy()
        for row in np.flatnonzero(~batch.closed_form):
            u, v = score_f_menus(f1[row : row + 1], f2[row : row + 1], markets[row], exact=False)
            utility[row], violations[row] = u[0], v[0]
        return ScoredMenus(scored.r1, scored.r2, utility, violations, scored.certified)

    # ---------------------------------------------------------- evaluation

    def evaluate(self, evaluation: EvaluationSet) -> HistoryRow:
        """Utility ratio, violations and repairs of the deterministic proposals.

        ``utility_ratio`` is the mean over markets of U / U*, with U the utility of the
        contract :meth:`propose` returns (after any LP repair) and U* the exact optimum.
        """
        proposed = self.propose_batch(evaluation.markets)
        batch = MarketBatch.from_markets(evaluation.markets)
        utility = cloud_utility_batch(proposed.f1, proposed.r1, proposed.f2, proposed.r2, batch)
        row = {
            "utility_ratio": float(np.mean(utility / evaluation.optimum)),
            "lp_frac": float(np.mean(~proposed.certified)),
            "replaced_frac": float(np.mean(proposed.replaced)),
        }
        return row | {"active_neuron_frac": self.active_neuron_fraction()}

    def active_neuron_fraction(self) -> float:
        """Fraction of the actor's hidden neurons in use (1.0 for unpruned learners)."""
        if isinstance(self.learner, DiffusionSAC):
            return active_neuron_fraction(self.learner.actor.denoiser)
        return 1.0

    def inference_ms(self, markets: Sequence[Market], repeats: int = 5) -> float:
        """Median wall time of :meth:`propose_batch` on ``markets``, in milliseconds."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.propose_batch(markets)
            times.append(1e3 * (time.perf_counter() - start))
        return float(np.median(times))

    # ----------------------------------------------------- online feedback

    def observe(
        self, markets: Sequence[Market], contracts: Sequence[DynamicContract], utilities: np.ndarray
    ) -> dict[str, float]:
        """Feed back realised cloud utilities of proposed contracts (online fine-tuning).

        Stores the transitions (off-policy learners) and runs ``config.online_updates``
        gradient steps; with the default 0 it stores nothing and changes nothing.
        """
        if self.config.online_updates == 0 or isinstance(self.learner, PPO):
            return {}
        batch = MarketBatch.from_markets(markets)
        f1 = np.stack([c.f1 for c in contracts])
        f2 = np.stack([c.f2 for c in contracts])
        actions = torch.from_numpy(menus_to_actions(f1, f2, batch).astype(np.float32))
        utilities = np.asarray(utilities, dtype=float)
        reward = designer_reward(
            utilities, np.zeros(len(markets)), batch, self.config.reward_scale_frac, 0.0
        )
        rewards = torch.from_numpy(reward.astype(np.float32))
        self.buffer.add(one_step_batch(self.states(batch), actions, rewards))
        metrics: dict[str, float] = {}
        for _ in range(self.config.online_updates):
            metrics = self.learner.update(self.buffer.sample(self._batch_size()))
        return _namespaced(metrics)

    # --------------------------------------------------------- checkpoints

    def save(self, path: str | Path) -> Path:
        """Write weights, masks and config to a pickle-free ``.npz`` checkpoint."""
        header = {
            "version": CHECKPOINT_VERSION,
            "config": asdict(self.config),
            "ranges": asdict(self.ranges),
        }
        return save_checkpoint(path, self.learner.state_dict(), header)

    @classmethod
    def load(cls, path: str | Path) -> ContractDesigner:
        """Rebuild a designer from :meth:`save`'s checkpoint."""
        state, header = load_checkpoint(path)
        if header.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {header.get('version')} != {CHECKPOINT_VERSION}")
        ranges = MarketRanges(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in header["ranges"].items()}
        )
        designer = cls(DesignerConfig.from_dict(header["config"]), ranges)
        designer.learner.load_state_dict(state)
        return designer


class _Rollout:
    """Accumulates PPO's on-policy transitions until a rollout is complete."""

    def __init__(self) -> None:
        self.parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    @property
    def size(self) -> int:
        return sum(part[0].shape[0] for part in self.parts)

    def add(
        self, states: Tensor, actions: Tensor, log_probs: Tensor | None, rewards: Tensor
    ) -> None:
        assert log_probs is not None, "PPO rollouts need behaviour log-probabilities"
        self.parts.append((states, actions, log_probs, rewards))

    def pop(self) -> RolloutBatch:
        columns = [torch.cat(column) for column in zip(*self.parts, strict=True)]
        self.parts = []
        return RolloutBatch(*columns)


def _snapshot(learner: Learner) -> dict[str, dict[str, Tensor]]:
    """A detached copy of the learner's state (to restore the best one later)."""
    return {
        name: {key: value.detach().clone() for key, value in part.items()}
        for name, part in learner.state_dict().items()
    }


def _namespaced(metrics: dict[str, float]) -> dict[str, float]:
    return {f"designer/{key}": value for key, value in metrics.items()}


def _schedule_of(learner: DiffusionSAC) -> NoiseSchedule:
    return make_schedule(learner.config.schedule, learner.config.denoising_steps)


def designer_config_json(config: DesignerConfig) -> str:
    """The config as JSON (for logs next to a run's outputs)."""
    return json.dumps(asdict(config), indent=2)
