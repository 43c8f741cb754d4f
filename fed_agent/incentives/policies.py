"""Contract policies: who designs each ES's two-period contract, by name.

Every policy maps a batch of per-ES markets to one DynamicContract per market, so the round
logic is the same for all of them: the learned designers (EDMSAC, DMSAC), the exact references
of the contract model, and plain FedAvg's flat fee for a fixed effort.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fed_agent.choices import check_choice
from fed_agent.contracts import DynamicContract, Market, solve_reference
from fed_agent.incentives.config import POLICIES, IncentiveConfig

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_CHECKPOINTS = {"edmsac": "edmsac_federation.npz", "dmsac": "dmsac_federation.npz"}
"""Designers trained on federation-like markets (``--market federation``): each ES's market
differs from the configured one by its workload, upload and the cloud's belief, on which the
default-market specialist ``edmsac_default.npz`` does worse (docs/designer.md, "The shipped
checkpoints", has the figures)."""
ORACLE_POLICIES = frozenset({"complete_information"})
"""Policies that see each ES's type (a simulation-only upper bound): the ES reveals it."""

Policy = Callable[[Sequence[Market]], list[DynamicContract]]


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


def shipped_checkpoint(policy: str) -> Path:
    """The shipped checkpoint of a learned policy, next to this code or in the installation."""
    name = SHIPPED_CHECKPOINTS[policy]
    places = [ASSETS, _installed_assets()]
    for folder in places:
        if folder is not None and (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"shipped designer checkpoint {name} not found in {[str(p) for p in places if p]}; "
        "reinstall fed-agent or set incentive.designer_checkpoint"
    )


@functools.lru_cache(maxsize=4)
def _designer(path: str):
    from fed_agent.designer import ContractDesigner  # torch only when a learned policy is used

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"designer checkpoint {path} does not exist; train one with "
            "`fed-agent designer train --out PATH` and set incentive.designer_checkpoint"
        )
    return ContractDesigner.load(path)


def make_policy(cfg: IncentiveConfig) -> Policy:
    """The contract policy named by ``cfg.policy``."""
    name = check_choice("incentive.policy", cfg.policy, POLICIES)
    if name == "fedavg_flat_fee":
        return lambda markets: [
            flat_fee_contract(m, cfg.flat_fee_f_ghz, cfg.flat_fee) for m in markets
        ]
    if name in ("edmsac", "dmsac"):
        designer = _designer(str(cfg.designer_checkpoint or shipped_checkpoint(name)))
        return designer.propose
    return lambda markets: [solve_reference(name, m).contract for m in markets]
