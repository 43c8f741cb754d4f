"""Contract policies: who designs each ES's two-period contract, by name.

Every policy maps a batch of per-ES markets to what the cloud offers each ES, so the round
logic is the same for all of them: the learned designers (EDMSAC, DMSAC), the exact references
of the contract model, and plain FedAvg's flat fee for a fixed effort. Contract designers
(learned and exact) go through the guard (``fed_agent.incentives.guard``): their proposal is
priced, compared with a cheap reference, and withdrawn where it would lose money.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fed_agent.choices import check_choice
from fed_agent.contracts import COMMITMENTS, DynamicContract, Market, solve_reference
from fed_agent.incentives.config import POLICIES, IncentiveConfig
from fed_agent.incentives.guard import (
    EXACT_BELOW,
    GuardedOffers,
    guard_offers,
    renegotiation_proof_offers,
    unguarded_offers,
)
from fed_agent.text import one_line

ASSETS = Path(__file__).resolve().parents[1] / "assets"
LEARNED_POLICIES = ("edmsac", "dmsac", "ppo")
CHECKPOINT_TEMPLATE = "{policy}_federation_k{num_types}.npz"
"""Shipped designers, one per learner and K, trained on federation-like markets
(``--market federation``): each ES's market differs from the configured one by its workload,
upload and the cloud's belief (docs/designer.md, "The shipped checkpoints", has the figures)."""
ORACLE_POLICIES = frozenset({"complete_information"})
"""Policies that see each ES's type (a simulation-only upper bound): the ES reveals it."""
UNGUARDED_POLICIES = frozenset({"fedavg_flat_fee", "complete_information"})
"""Not contract designs, so not guarded: the flat fee is the no-contract baseline as is, and
the oracle's contract is not incentive compatible by construction."""
UNCOMMITTED_POLICIES = frozenset({"fedavg_flat_fee"})
"""Offers that commit no one: a flat fee is offered round by round (per-period participation,
nothing held back), whatever the market's rule."""
PRICED_POLICIES = frozenset({*LEARNED_POLICIES, "optimal", "static", "uniform"})
"""Policies whose rewards are the least-cost rewards of their f: the guard verifies them."""


@dataclass(frozen=True)
class ContractPolicy:
    """A named policy: designs contracts for markets, then (if guarded) the guard decides.

    Calling it with the markets of a round returns the :class:`GuardedOffers`.
    """

    name: str
    design: Callable[[Sequence[Market]], list[DynamicContract]]
    covers: Callable[[Sequence[Market]], np.ndarray] | None = None
    """A learned designer's trust check (``ContractDesigner.covers``); None: trusted on every
    market (the exact references)."""
    exclusion: bool = False
    """The guard may offer exit items (``incentive.exclusion``)."""
    commitment: str = "full"
    """``market.commitment``: under ``renegotiation_proof`` a guarded policy designs nothing
    and the guard offers the exact renegotiation-proof contract."""

    def __call__(self, markets: Sequence[Market], deadline: bool = False) -> GuardedOffers:
        """The offers for ``markets``; ``deadline``: the markets carry a round deadline's
        floor on f (``profiles.deadline_market``), which no learned designer was trained on."""
        start = time.perf_counter()
        if self.commitment == "renegotiation_proof" and self.name not in UNGUARDED_POLICIES:
            offers = renegotiation_proof_offers(markets, self.exclusion)
            return dataclasses.replace(offers, guard_s=time.perf_counter() - start)
        proposals = self.design(markets)
        designed = time.perf_counter()
        if self.name in UNGUARDED_POLICIES:
            offers = unguarded_offers(markets, proposals)
        else:
            offers = guard_offers(
                markets,
                proposals,
                priced=self.name in PRICED_POLICIES,
                exact_below=np.inf if self.exclusion else EXACT_BELOW,
                trusted=self._trusted(markets, deadline),
                exclusion=self.exclusion,
            )
        timing = {"design_s": designed - start, "guard_s": time.perf_counter() - designed}
        return dataclasses.replace(offers, **timing)

    def _trusted(self, markets: Sequence[Market], deadline: bool) -> np.ndarray | None:
        """Where the guard trusts the proposals (None: everywhere). A learned designer is
        trusted within its training ranges, and nowhere under a deadline. With exclusion
        every untrusted market is solved exactly (``exact_below`` infinite): the designers'
        actions never reach the exit item, so only the exact solve can offer one."""
        if self.covers is None:
            return None
        trusted = np.asarray(self.covers(markets), bool)
        return trusted & (not deadline)


def check_designable(policy: ContractPolicy, market: Market) -> None:
    """Refuse a market no contract can be designed on before a run starts: ``policy`` is asked
    once for the offer of ``market`` (the configured one), as each round asks it for every
    ES's market, so settings that the config's ranges allow but the solvers cannot handle
    (``market.kappa=1e30``: the pricing LP fails; ``market.theta_max=1e308``: the solvers
    overflow, a floating-point error here) stop the run before its first round and before its
    previous run folder moves. The global torch RNG, which a designer samples from,
    is left as it was, so the check changes nothing of the run.

    Raises
    ------
    ValueError
        One line naming the failure.
    """
    if policy.name in UNCOMMITTED_POLICIES:
        market = market.replace(participation="per_period")
    torch = sys.modules.get("torch")  # imported by a learned designer, the one that samples
    try:  # an overflow on the way (market.theta_max=1e308) is a failure, not a warning
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            if torch is None:
                policy([market])
            else:
                with torch.random.fork_rng(devices=[]):
                    policy([market])
    except (ArithmeticError, RuntimeError, ValueError, np.linalg.LinAlgError) as err:
        raise ValueError(
            f"market: the {policy.name} policy cannot design a contract on these settings "
            f"({one_line(err)}); bring kappa, omega and the types nearer the defaults' scales "
            "(docs/contract-model.md)"
        ) from None


def flat_fee_contract(market: Market, f_ghz: float, fee: float) -> DynamicContract:
    """One item (f, fee) for every type in both periods: FedAvg with a fixed effort and fee."""
    k = market.num_types
    return DynamicContract(
        np.full(k, f_ghz), np.full(k, fee), np.full((k, k), f_ghz), np.full((k, k), fee)
    )


def _installed_assets() -> Path | None:
    """The assets folder of the installed fed-agent distribution (editable or not).

    Flower copies an app into a bundle that holds only source and text files, so a ServerApp
    running from the bundle finds the shipped checkpoints here, not next to its own code.
    """
    try:
        dist = importlib.metadata.distribution("fed-agent")
    except importlib.metadata.PackageNotFoundError:
        return None
    direct_url = dist.read_text("direct_url.json")
    if direct_url:  # an editable install points at the source tree
        url = json.loads(direct_url).get("url", "")
        if url.startswith("file://"):
            return Path(urllib.parse.unquote(url[len("file://") :])) / "fed_agent" / "assets"
    return Path(str(dist.locate_file("fed_agent/assets")))


def shipped_checkpoint(policy: str, num_types: int) -> Path:
    """The shipped checkpoint of a learned policy for K types, next to this code or in the
    installation; a missing K names the K values that exist and how to train one."""
    name = CHECKPOINT_TEMPLATE.format(policy=policy, num_types=num_types)
    places = list(dict.fromkeys(p for p in (ASSETS, _installed_assets()) if p is not None))
    for folder in places:
        if (folder / name).is_file():
            return folder / name
    shipped = sorted({k for folder in places for k in _shipped_types(folder, policy)})
    raise FileNotFoundError(
        f"no shipped {policy} designer for K = {num_types} types ({name} not found in "
        f"{[str(p) for p in places]}); shipped K values: {shipped}. Train one with "
        f"`fed-agent designer train --algorithm {policy} --market federation "
        f"--num-types {num_types} --out PATH` and set incentive.designer_checkpoint=PATH"
    )


def _shipped_types(folder: Path, policy: str) -> list[int]:
    prefix, suffix = CHECKPOINT_TEMPLATE.split("{num_types}")
    prefix = prefix.format(policy=policy)
    return [
        int(path.name[len(prefix) : -len(suffix)])
        for path in folder.glob(f"{prefix}*{suffix}")
        if path.name[len(prefix) : -len(suffix)].isdigit()
    ]


def designer_checkpoint(cfg: IncentiveConfig, num_types: int) -> Path:
    """The checkpoint a learned policy loads: the configured one, or the shipped one for K."""
    if cfg.designer_checkpoint:
        path = Path(cfg.designer_checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"incentive.designer_checkpoint={path} does not exist; train one with "
                "`fed-agent designer train --out PATH`"
            )
        return path
    return shipped_checkpoint(cfg.policy, num_types)


@functools.lru_cache(maxsize=4)
def _designer(path: str, num_types: int):
    from fed_agent.designer import ContractDesigner  # torch only when a learned policy is used

    designer = ContractDesigner.load(path)
    if designer.num_types != num_types:
        raise ValueError(
            f"designer checkpoint {path} serves K = {designer.num_types} types, the market "
            f"has K = {num_types}; train one with `fed-agent designer train --num-types "
            f"{num_types} --out PATH`"
        )
    return designer


def make_policy(cfg: IncentiveConfig, num_types: int, commitment: str) -> ContractPolicy:
    """The contract policy named by ``cfg.policy`` for markets of K = ``num_types`` types;
    ``commitment`` is ``market.commitment`` (under ``renegotiation_proof`` every guarded
    policy offers the exact renegotiation-proof contract)."""
    name = check_choice("incentive.policy", cfg.policy, POLICIES)
    check_choice("market.commitment", commitment, COMMITMENTS)
    if name == "none":
        raise ValueError(
            "incentive.policy=none designs no contracts: the ServerApp runs Flower's FedAvg"
        )
    if name == "fedavg_flat_fee":
        return ContractPolicy(
            name, lambda ms: [flat_fee_contract(m, cfg.flat_fee_f_ghz, cfg.flat_fee) for m in ms]
        )
    if name in LEARNED_POLICIES:
        designer = _designer(str(designer_checkpoint(cfg, num_types)), num_types)
        return ContractPolicy(name, designer.propose, designer.covers, cfg.exclusion, commitment)
    exclusion = cfg.exclusion and name not in UNGUARDED_POLICIES

    def solve(markets: Sequence[Market]) -> list[DynamicContract]:
        return [solve_reference(name, m, exclusion=exclusion).contract for m in markets]

    return ContractPolicy(name, solve, exclusion=exclusion, commitment=commitment)
