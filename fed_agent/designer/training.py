"""The designer's training loop: one-step episodes on markets, evaluations, keep the best.

A plain loop over iterations. Each draws ``num_envs`` markets (from the training ranges or
one named market), lets the learner act (uniform actions during an off-policy warm-up),
scores the menus in closed form (:func:`fed_agent.contracts.score_menus`) and hands the
transitions to the learner: into a replay buffer (off-policy) or a rollout (on-policy).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from fed_agent.contracts import (
    Market,
    MarketBatch,
    cloud_utility_batch,
    named_market,
    sample_market,
    score_menus,
)
from fed_agent.contracts.pricing import price_menus, reference_menus
from fed_agent.designer.config import TRAINING_RANGES
from fed_agent.designer.demonstrations import (
    Demonstrations,
    demonstration_markets,
    solve_demonstrations,
)
from fed_agent.designer.designer import (
    ContractDesigner,
    EvaluationSet,
    HistoryRow,
    Learner,
    heldout_markets,
)
from fed_agent.designer.mdp import action_dim, actions_to_menus, designer_reward, state_dim
from fed_agent.rl.ppo import RolloutBatch
from fed_agent.rl.replay import ReplayBuffer, one_step_batch
from fed_agent.seeding import derive_seed, torch_generator

MARKET_KEY = 2  # seed-stream key of the training markets and warm-up actions


def validation_set(designer: ContractDesigner) -> EvaluationSet:
    """The markets model selection uses: the named market, or held-out random ones."""
    config = designer.config
    if config.market in TRAINING_RANGES:
        markets = heldout_markets(
            designer.ranges, config.num_types, config.eval_markets, config.seed
        )
        return EvaluationSet.solve(markets)
    return EvaluationSet.solve([named_market(config.market)])


def train_designer(
    designer: ContractDesigner,
    evaluation: EvaluationSet | None = None,
    on_progress: Callable[[int, HistoryRow], None] | None = None,
    demonstrations: Demonstrations | None = None,
) -> list[HistoryRow]:
    """Train ``designer`` for ``config.env_steps`` environment steps.

    Parameters
    ----------
    designer : ContractDesigner
        The designer whose learner is trained in place.
    evaluation : EvaluationSet, optional
        Markets reported on every ``eval_interval`` steps (default: the validation set).
    on_progress : callable, optional
        Called as on_progress(env_steps_done_this_iteration, metrics) after every
        iteration (for a progress bar and a metrics log).
    demonstrations : Demonstrations, optional
        Exactly solved training markets to imitate (default: ``config.demonstrations`` of
        them are solved here; none when that is 0). The learner clones them for
        ``config.imitation_steps`` steps before the first episode, they seed an off-policy
        learner's replay buffer, and every iteration's updates are followed by as many
        cloning steps (the behaviour-cloning term of Diffusion-QL, as separate steps).

    Returns
    -------
    list[dict[str, float]]
        One row per evaluation: env_steps, utility_ratio, ..., kept_env_steps; with
        ``config.keep_best`` one more last row: the learner kept (the best on the
        validation markets, restored). Model selection never looks at ``evaluation``
        unless it is the validation set itself.
    """
    config = designer.config
    validation = validation_set(designer) if config.keep_best or evaluation is None else None
    evaluation = evaluation or validation
    if demonstrations is None and config.demonstrations > 0:
        markets = demonstration_markets(
            config.market, config.num_types, config.demonstrations, config.seed, designer.ranges
        )
        demonstrations = solve_demonstrations(
            markets, config.reward_scale_frac, config.violation_penalty
        )
    loop = _Loop(designer, demonstrations)
    loop.imitate(config.imitation_steps)
    history = [{"env_steps": 0.0, **designer.evaluate(evaluation)}]
    if config.keep_best:  # (validation ratio, env steps, learner state) of the best evaluation
        ratio = _selection_ratio(designer, validation, evaluation, history[-1])
        best = (ratio, 0.0, _snapshot(designer.learner))
    steps, next_eval = 0, config.eval_interval
    while steps < config.env_steps:
        metrics = loop.iteration(steps)
        steps += config.num_envs
        if steps >= next_eval or steps >= config.env_steps:
            history.append({"env_steps": float(steps), **designer.evaluate(evaluation)})
            if config.keep_best:
                ratio = _selection_ratio(designer, validation, evaluation, history[-1])
                if ratio > best[0]:
                    best = (ratio, float(steps), _snapshot(designer.learner))
            metrics |= {f"eval/{k}": v for k, v in history[-1].items()}
            next_eval += config.eval_interval
        if on_progress is not None:
            on_progress(config.num_envs, metrics)
    kept_steps = float(steps)
    if config.keep_best:
        kept_steps = best[1]
        if kept_steps < steps:
            designer.learner.load_state_dict(best[2])
        history.append({"env_steps": float(steps), **designer.evaluate(evaluation)})
    for row in history:
        row["kept_env_steps"] = kept_steps
    return history


def menu_scores(
    f1: np.ndarray, f2: np.ndarray, markets: list[Market], batch: MarketBatch
) -> tuple[np.ndarray, np.ndarray]:
    """Cloud utility and violated constraints of training menus, (B,) each.

    The utility is the exact one that proposals will have: the certified closed form, else
    the minimal payment LP (:func:`price_menus`; on markets with non-monotone transitions
    the closed form's rewards can be feasible yet dearer than the least). A menu that no
    rewards implement is worth what the cloud would then offer, the pooling reference
    (:func:`reference_menus`), with its violation count for the penalty: the closed form's
    utility of such a menu is too optimistic and would pull the policy towards it.
    """
    scored = score_menus(f1, f2, batch)
    if bool(scored.certified.all()):
        return scored.utility, scored.violations
    priced = price_menus(f1, f2, markets, batch, scored)
    fallback = cloud_utility_batch(*reference_menus(batch), batch)
    utility = np.where(priced.implementable, priced.utility, fallback)
    violations = np.where(priced.implementable, 0, np.maximum(scored.violations, 1))
    return utility, violations


def _selection_ratio(
    designer: ContractDesigner,
    validation: EvaluationSet,
    evaluation: EvaluationSet,
    row: HistoryRow,
) -> float:
    """The utility ratio that model selection compares."""
    if validation.markets == evaluation.markets:
        return row["utility_ratio"]
    return designer.evaluate(validation)["utility_ratio"]


class _Loop:
    """The state of one training run: market stream, replay buffer or rollout."""

    def __init__(
        self, designer: ContractDesigner, demonstrations: Demonstrations | None = None
    ) -> None:
        self.designer = designer
        self.demonstrations = demonstrations
        self.config = designer.config
        self.rng = np.random.default_rng(derive_seed(self.config.seed, MARKET_KEY))
        self.generator = torch_generator(derive_seed(self.config.seed, MARKET_KEY))
        learner = designer.learner
        k = self.config.num_types
        self.buffer = (
            None
            if learner.on_policy
            else ReplayBuffer(learner.buffer_size, state_dim(k), action_dim(k))
        )
        self.rollout: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        if demonstrations is not None and self.buffer is not None:
            demos = demonstrations
            self.buffer.add(one_step_batch(demos.states, demos.actions, demos.rewards))

    def imitate(self, steps: int) -> HistoryRow:
        """``steps`` behaviour-cloning steps on the demonstrations (none without them).

        The pruning masks are recomputed every ``updates_per_iteration`` steps on the
        demonstration states, as the episodes recompute them on their markets, so EDMSAC
        clones under the masks it will act with.
        """
        metrics: HistoryRow = {}
        if self.demonstrations is None:
            return metrics
        learner, size = self.designer.learner, self.config.imitation_batch_size
        for step in range(steps):
            if step % self.config.updates_per_iteration == 0:
                probe, _ = self.demonstrations.sample(size, self.generator)
                learner.begin_episode(probe)
            metrics = _namespaced(
                learner.imitate(*self.demonstrations.sample(size, self.generator))
            )
        return metrics

    def markets(self) -> list[Market]:
        count = self.config.num_envs
        if self.config.market in TRAINING_RANGES:
            ranges, k = self.designer.ranges, self.config.num_types
            return [sample_market(self.rng, ranges, k) for _ in range(count)]
        return [named_market(self.config.market)] * count

    def iteration(self, steps: int) -> HistoryRow:
        """One batch of one-step episodes and the learner's updates; namespaced metrics."""
        learner: Learner = self.designer.learner
        markets = self.markets()
        batch = MarketBatch.from_markets(markets)
        states = self.designer.states(batch)
        metrics = _namespaced(learner.begin_episode(states))
        actions, log_probs = self.behaviour(states, steps)
        f1, f2 = actions_to_menus(actions.clamp(-1, 1).numpy().astype(float), batch)
        utility, violations = menu_scores(f1, f2, markets, batch)
        reward = designer_reward(
            utility,
            violations,
            batch,
            self.config.reward_scale_frac,
            self.config.violation_penalty,
        )
        rewards = torch.from_numpy(reward.astype(np.float32))
        metrics["designer/reward"] = float(reward.mean())
        metrics["designer/feasible_frac"] = float(np.mean(violations == 0))
        if learner.on_policy:
            updated = self.learn_on_policy(states, actions, log_probs, rewards)
            if updated:
                metrics |= updated | self.imitate(self.config.updates_per_iteration)
            return metrics
        self.buffer.add(one_step_batch(states, actions, rewards))
        if steps + self.config.num_envs > self.config.warmup_env_steps:
            for _ in range(self.config.updates_per_iteration):
                sample = self.buffer.sample(learner.batch_size, self.generator)
                metrics |= _namespaced(learner.update(sample))
            metrics |= self.imitate(self.config.updates_per_iteration)
        return metrics

    def behaviour(self, states: Tensor, steps: int) -> tuple[Tensor, Tensor | None]:
        """Uniform actions during an off-policy warm-up, then the learner's exploration."""
        learner = self.designer.learner
        if not learner.on_policy and steps < self.config.warmup_env_steps:
            width = action_dim(self.config.num_types)
            uniform = torch.rand(states.shape[0], width, generator=self.generator)
            return uniform * 2 - 1, None
        return learner.explore(states)

    def learn_on_policy(
        self, states: Tensor, actions: Tensor, log_probs: Tensor | None, rewards: Tensor
    ) -> HistoryRow:
        """Collect the rollout; update once it holds ``ppo.rollout_size`` transitions."""
        assert log_probs is not None, "on-policy learners return behaviour log-probabilities"
        self.rollout.append((states, actions, log_probs, rewards))
        if sum(part[0].shape[0] for part in self.rollout) < self.config.ppo.rollout_size:
            return {}
        columns = [torch.cat(column) for column in zip(*self.rollout, strict=True)]
        self.rollout = []
        return _namespaced(self.designer.learner.update(RolloutBatch(*columns)))


def _snapshot(learner: Learner) -> dict[str, dict[str, Tensor]]:
    """A detached copy of the learner's state (to restore the best one later)."""
    return {
        name: {key: value.detach().clone() for key, value in part.items()}
        for name, part in learner.state_dict().items()
    }


def _namespaced(metrics: dict[str, float]) -> dict[str, float]:
    return {f"designer/{key}": value for key, value in metrics.items()}
