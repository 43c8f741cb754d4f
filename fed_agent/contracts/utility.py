"""Utilities of the ES and the cloud, and the cloud's value of an ES's work."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from fed_agent import latency
from fed_agent.contracts.constraints import item_weights
from fed_agent.contracts.contract import DynamicContract
from fed_agent.contracts.market import Market


def value_of_work(f_ghz: ArrayLike, market: Market) -> np.ndarray:
    """Cloud value of one ES's period of work, G(f) = omega ln(1 + T_max - T(f)).

    Returns -inf where the latency bound makes the logarithm undefined, and 0 for the exit
    item f = 0 (no work, no value).
    """
    f_ghz = np.asarray(f_ghz, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        headroom = (
            1.0
            + market.t_max_s
            - latency.construction_latency_s(f_ghz, market.workload_gcycles, market.upload_s)
        )
        value = np.where(headroom > 0, market.omega * np.log(np.maximum(headroom, 1e-300)), -np.inf)
    return np.where(f_ghz == 0, 0.0, value)


def energy_cost(f_ghz: ArrayLike, market: Market) -> np.ndarray:
    """Energy cost c(f) = kappa W f^2 of one period's work on ``market``."""
    return latency.construction_cost(f_ghz, market.workload_gcycles, market.kappa)


def es_period_utility(reward: ArrayLike, f_ghz: ArrayLike, theta: ArrayLike, market: Market):
    """ES utility of one item in one period: R - c(f) / theta."""
    return np.asarray(reward, dtype=float) - energy_cost(f_ghz, market) / np.asarray(theta)


def es_utility(contract: DynamicContract, market: Market, true_type: int, report: int) -> float:
    """Expected epoch utility of an ES of period-1 type ``true_type`` that reports ``report``
    in period 1 and its true type in period 2 (the right side of the intertemporal IC)."""
    theta = market.types
    period1 = es_period_utility(contract.r1[report], contract.f1[report], theta[true_type], market)
    period2 = es_period_utility(contract.r2[report], contract.f2[report], theta, market)
    return float(period1 + market.discount * market.transition[true_type] @ period2)


def es_rents(contract: DynamicContract, market: Market) -> np.ndarray:
    """Expected epoch utility (information rent) of each truthful period-1 type, shape (K,)."""
    return np.array([es_utility(contract, market, i, i) for i in range(market.num_types)])


def cloud_utility(contract: DynamicContract, market: Market) -> float:
    """Expected cloud utility per ES, assuming truthful self-selection (eq. U_cloud):
    sum_i rho_i [G(f_i) - R_i + delta sum_j P_ij (G(f_ij) - R_ij)]."""
    weights = item_weights(market)
    values = value_of_work(contract.flat_f(), market) - contract.flat_r()
    used = weights > 0  # a zero-probability item never counts, even if its G is -inf
    return float(weights[used] @ values[used])
