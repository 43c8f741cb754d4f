"""How a contract designer is trained: its config schema and the training market ranges."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fed_agent.choices import check_choice
from fed_agent.contracts import (
    NAMED_MARKETS,
    MarketParams,
    MarketRanges,
    federation_ranges,
    named_market,
)
from fed_agent.contracts.market import MAX_TYPES
from fed_agent.rl.gaussian_sac import GaussianSACConfig
from fed_agent.rl.ppo import PPOConfig
from fed_agent.rl.sac import EDMSACConfig
from fed_agent.validation import check_number

DESIGNERS = ("edmsac", "dmsac", "sac", "ppo")
TRAINING_RANGES = {
    "random": MarketRanges(),
    # the per-ES markets a federated run on the default market designs for
    "federation": federation_ranges(MarketParams()),
}


def training_markets() -> tuple[str, ...]:
    """Valid ``DesignerConfig.market`` values: the random ranges, then every named market."""
    return (*TRAINING_RANGES, *NAMED_MARKETS)


@dataclass
class DesignerConfig:
    """How a designer is trained.

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
    updates_per_iteration: int = 8
    """gradient steps of an off-policy learner per iteration (fewer left EDMSAC short of the
    optimum on the default market: docs/designer.md, "EDMSAC")"""
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
    demonstrations: int = 0
    """training markets solved exactly whose optimal menus the learner imitates before and
    while it learns from rewards (0: reinforcement learning alone; docs/designer.md,
    "Demonstrations")"""
    imitation_steps: int = 2_000
    """behaviour-cloning gradient steps on the demonstrations before the first episode"""
    imitation_batch_size: int = 256
    """demonstrations per behaviour-cloning step"""
    seed: int = 0
    """seed of everything the designer draws"""
    edmsac: EDMSACConfig = field(default_factory=EDMSACConfig)
    sac: GaussianSACConfig = field(default_factory=GaussianSACConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self) -> None:
        check_choice("designer", self.algorithm, DESIGNERS)
        check_choice("training market", self.market, training_markets())
        if self.market not in TRAINING_RANGES:
            self.num_types = named_market(self.market).num_types
        check_number("num_types", self.num_types, 2, MAX_TYPES, integer=True)
        for name in (
            "env_steps",
            "num_envs",
            "updates_per_iteration",
            "eval_interval",
            "eval_markets",
            "imitation_batch_size",
        ):
            check_number(name, getattr(self, name), 1, integer=True)
        for name in ("warmup_env_steps", "demonstrations", "imitation_steps", "seed"):
            check_number(name, getattr(self, name), 0, integer=True)
        check_number("reward_scale_frac", self.reward_scale_frac, 0, ends="()")
        check_number("violation_penalty", self.violation_penalty, 0)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DesignerConfig:
        """Rebuild a config from :func:`dataclasses.asdict` output (e.g. a checkpoint)."""
        nested = {"edmsac": EDMSACConfig, "sac": GaussianSACConfig, "ppo": PPOConfig}
        plain = {k: v for k, v in values.items() if k not in nested}
        return cls(**plain, **{k: t(**values[k]) for k, t in nested.items() if k in values})
