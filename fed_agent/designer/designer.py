"""The contract designer: proposals from a learned policy, exact pricing, save and load.

A :class:`ContractDesigner` turns markets into two-period dynamic contracts: the learner's
deterministic action for each market's state (:mod:`fed_agent.designer.mdp`) becomes a menu
of f, and :func:`fed_agent.contracts.pricing.price_menus` gives it least-cost rewards (the
closed form where certified, one stacked LP for the rest). Training is
:func:`fed_agent.designer.training.train_designer`; docs/designer.md explains each choice.
One designer serves one number of types K (state and action widths depend on K).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
    cloud_utility_batch,
    neighbour_transition,
    reversal_matrix,
    sample_market,
)
from fed_agent.contracts.pricing import PricedMenus, price_menus, reference_menus
from fed_agent.contracts.solvers import optimal_contract
from fed_agent.designer.config import DESIGNERS, TRAINING_RANGES, DesignerConfig
from fed_agent.designer.mdp import (
    FEATURE_RANGES,
    action_dim,
    actions_to_menus,
    state_dim,
    state_features,
)
from fed_agent.rl.checkpoint import load_checkpoint, save_checkpoint
from fed_agent.rl.gaussian_sac import GaussianSAC
from fed_agent.rl.ppo import PPO
from fed_agent.rl.sac import DiffusionSAC, EDMSACConfig
from fed_agent.seeding import derive_seed

CHECKPOINT_VERSION = 2
"""2: the state carries the participation rule and actions reach up to f_max."""
HELDOUT_KEY, TORCH_KEY = 3, 4  # seed-stream keys (training's is in fed_agent.designer.training)
HistoryRow = dict[str, float]


class Learner(Protocol):
    """What the designer needs of a learner (all of fed_agent.rl's learners fit)."""

    on_policy: bool

    def act(self, states: Tensor, deterministic: bool = False) -> Tensor: ...

    def explore(self, states: Tensor) -> tuple[Tensor, Tensor | None]: ...

    def begin_episode(self, probe_states: Tensor) -> dict[str, float]: ...

    def update(self, batch: Any) -> dict[str, float]: ...

    def imitate(self, states: Tensor, actions: Tensor) -> dict[str, float]: ...

    def active_neuron_fraction(self) -> float: ...

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
        (B,) the designed menu was not implementable and the pooling reference was used.
    utility : np.ndarray
        (B,) expected cloud utility per ES of each contract.
    """

    f1: np.ndarray
    r1: np.ndarray
    f2: np.ndarray
    r2: np.ndarray
    certified: np.ndarray
    replaced: np.ndarray
    utility: np.ndarray

    def contracts(self) -> list[DynamicContract]:
        """The rows as validated :class:`DynamicContract` objects."""
        return DynamicContract.stacked(self.f1, self.r1, self.f2, self.r2)

    @classmethod
    def from_priced(cls, priced: PricedMenus, batch: MarketBatch) -> ProposedMenus:
        """Priced menus, with the pooling reference where a menu is not implementable."""
        replaced = ~priced.implementable
        menus = []
        for designed, reference in zip(
            (priced.f1, priced.r1, priced.f2, priced.r2), reference_menus(batch), strict=True
        ):
            mask = replaced.reshape(-1, *([1] * (designed.ndim - 1)))
            menus.append(np.where(mask, reference, designed))
        utility = cloud_utility_batch(*menus, batch)
        return cls(*menus, priced.certified, replaced, utility)


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


def _inside(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    return (values >= low - 1e-9 * (1 + abs(low))) & (values <= high + 1e-9 * (1 + abs(high)))


def _transitions_in_ranges(transition: np.ndarray, ranges: MarketRanges) -> np.ndarray:
    """(B,) whether each of B transition matrices (B, K, K) is one that ``sample_market``
    draws from ``ranges``: both structures are linear in their parameter, so the parameter
    is read off one entry and the whole matrix compared."""
    k = transition.shape[1]
    if ranges.transition == "dirichlet":
        return np.ones(transition.shape[0], bool)

    def matches(p: np.ndarray, base: np.ndarray, rest: np.ndarray) -> np.ndarray:
        candidate = p[:, None, None] * base + (1 - p[:, None, None]) * rest
        return np.all(np.abs(candidate - transition) <= 1e-9, axis=(1, 2))

    if ranges.transition == "neighbour":
        # neighbour_transition(K, stay) = stay I + (1 - stay) neighbour_transition(K, 0)
        stay = transition[:, 0, 0]
        ok = matches(stay, np.eye(k), neighbour_transition(k, 0.0))
        return ok & _inside(stay, ranges.transition_stay)
    # persistence_transition(K, p) = |p| S + (1 - |p|) / K, S = I (p >= 0) or the reversal
    uniform = np.full((k, k), 1.0 / k)
    same = (transition[:, 0, 0] - 1 / k) / (1 - 1 / k)
    flip = (transition[:, 0, k - 1] - 1 / k) / (1 - 1 / k)
    persistent = matches(same, np.eye(k), uniform) & (same >= -1e-12)
    reversed_ = matches(flip, reversal_matrix(k), uniform) & (flip >= -1e-12)
    return (persistent & _inside(same, ranges.persistence)) | (
        reversed_ & _inside(-flip, ranges.persistence)
    )


def markets_in_ranges(markets: Sequence[Market], ranges: MarketRanges) -> np.ndarray:
    """(B,) whether each market is one that ``sample_market(rng, ranges, K)`` can draw.

    Compared: evenly spaced types with the lowest and the span in range, delta, workload,
    kappa, omega and T_max in range, the participation rule, the transition structure (and
    its stay or persistence in range) and the upload time S/r within what the range of module
    sizes gives on the market's own uplink. The prior is not compared (the ranges draw it
    from a Dirichlet distribution over the whole simplex).
    """
    batch = MarketBatch.from_markets(markets)
    types = batch.types
    even = np.all(np.abs(np.diff(types, 2, axis=1)) <= 1e-9 * (1 + types[:, -1:]), axis=1)
    # S / r of the market's own uplink at the smallest and the largest module size
    seconds_per_byte = batch.upload_s / np.array([m.module_bytes for m in markets])
    upload_bounds = [b * seconds_per_byte for b in ranges.module_bytes]
    inside = (
        even
        & _inside(types[:, 0], ranges.theta_min)
        & _inside(types[:, -1] - types[:, 0], ranges.theta_span)
        & _inside(batch.discount, ranges.discount)
        & _inside(batch.workload, ranges.workload_gcycles)
        & _inside(batch.kappa, ranges.kappa)
        & _inside(batch.omega, ranges.omega)
        & _inside(batch.t_max, ranges.t_max_s)
        & (batch.upload_s >= upload_bounds[0] * (1 - 1e-9))
        & (batch.upload_s <= upload_bounds[1] * (1 + 1e-9))
        & (batch.ex_ante == (ranges.participation == "ex_ante"))
    )
    return inside & _transitions_in_ranges(batch.transition, ranges)


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

    @property
    def name(self) -> str:
        """The learner's name (edmsac, dmsac, sac, ppo)."""
        return self.config.algorithm

    def states(self, batch: MarketBatch) -> Tensor:
        """State features as a tensor, (B, state_dim)."""
        return torch.from_numpy(state_features(batch))

    def design(self, markets: Sequence[Market]) -> tuple[MarketBatch, np.ndarray, np.ndarray]:
        """Menus of f for ``markets`` (the learner's deterministic actions): batch, f1, f2."""
        self._check_markets(markets)
        batch = MarketBatch.from_markets(markets)
        actions = self.learner.act(self.states(batch), deterministic=True)
        f1, f2 = actions_to_menus(actions.numpy().astype(float), batch)
        return batch, f1, f2

    def propose_batch(self, markets: Sequence[Market]) -> ProposedMenus:
        """Contracts for ``markets`` as stacked arrays, designed in one batched pass.

        Menus from the policy, least-cost rewards from :func:`price_menus` (closed form
        where certified, one stacked LP for the rest), the pooling reference contract where a
        menu is not implementable.
        """
        batch, f1, f2 = self.design(markets)
        return ProposedMenus.from_priced(price_menus(f1, f2, markets, batch), batch)

    def propose(self, markets: Sequence[Market]) -> list[DynamicContract]:
        """One implementable, least-cost contract per market (see :meth:`propose_batch`)."""
        return self.propose_batch(markets).contracts()

    def covers(self, markets: Sequence[Market]) -> np.ndarray:
        """(B,) whether each market lies within the ranges this designer was trained on.

        The guard trusts a proposal only there (``guard_offers(..., trusted=...)``): outside,
        a proposal that loses to the pooling reference or earns less than half the
        complete-information value is checked against the exact optimum. See
        :func:`markets_in_ranges` for what is compared.
        """
        return markets_in_ranges(markets, self.ranges)

    def _check_markets(self, markets: Sequence[Market]) -> None:
        if not markets:
            raise ValueError("propose needs at least one market")
        wrong = {m.num_types for m in markets} - {self.num_types}
        if wrong:
            raise ValueError(
                f"this designer serves K = {self.num_types} types, got markets with K = {wrong}"
            )

    def evaluate(self, evaluation: EvaluationSet) -> HistoryRow:
        """Utility ratio, LP use and repairs of the deterministic proposals.

        ``utility_ratio`` is the mean over markets of U / U*, with U the utility of the
        contract :meth:`propose` returns (after any repair) and U* the exact optimum.
        """
        proposed = self.propose_batch(evaluation.markets)
        return {
            "utility_ratio": float(np.mean(proposed.utility / evaluation.optimum)),
            "lp_frac": float(np.mean(~proposed.certified)),
            "replaced_frac": float(np.mean(proposed.replaced)),
            "active_neuron_frac": self.learner.active_neuron_fraction(),
        }

    def inference_ms(self, markets: Sequence[Market], repeats: int = 5) -> float:
        """Median wall time of :meth:`propose_batch` on ``markets``, in milliseconds."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.propose_batch(markets)
            times.append(1e3 * (time.perf_counter() - start))
        return float(np.median(times))

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
            raise ValueError(
                f"{path}: checkpoint version {header.get('version')} != {CHECKPOINT_VERSION}; "
                "retrain it with `fed-agent designer train`"
            )
        ranges = MarketRanges(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in header["ranges"].items()}
        )
        designer = cls(DesignerConfig.from_dict(header["config"]), ranges)
        designer.learner.load_state_dict(state)
        return designer
