"""Aggregation of LoRA adapter states."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fed_agent.choices import check_choice
from fed_agent.protocol import AdapterState
from fed_agent.screening.robust import coordinate_median, trimmed_mean


def weighted_average(states: Sequence[AdapterState], weights: Sequence[float]) -> AdapterState:
    """Key-wise weighted mean of adapter tensors (FedAvg over the LoRA A and B matrices).

    Averaging A and B separately is not the average of the products B @ A (the cross terms
    differ); it is the FedAvg that flwr applies to a LoRA state and this project's default.
    Accumulates in float64.

    Raises
    ------
    ValueError
        For no states, mismatched keys or shapes, or weights that are negative or sum to 0.
    """
    if not states:
        raise ValueError("cannot aggregate zero adapter states")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(states),) or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(
            f"weights must be {len(states)} finite non-negative values with a "
            f"positive sum, got {list(weights)}"
        )
    w = w / w.sum()
    keys = list(states[0])
    for state in states[1:]:
        if list(state) != keys:
            raise ValueError("adapter states have different keys")
    return {
        k: sum(
            wi * np.asarray(s[k], dtype=np.float64) for wi, s in zip(w, states, strict=True)
        ).astype(np.float32)
        for k in keys
    }


def server_step(
    global_state: AdapterState, aggregated: AdapterState, learning_rate: float
) -> AdapterState:
    """``global + learning_rate x (aggregated - global)``, key-wise (in float64).

    The server learning rate of FedOpt: 1 returns ``aggregated`` itself.
    """
    if learning_rate == 1.0:
        return aggregated
    if list(aggregated) != list(global_state):
        raise ValueError("the aggregate and the global module have different keys")
    return {
        k: (
            np.asarray(global_state[k], dtype=np.float64)
            + learning_rate
            * (np.asarray(aggregated[k], np.float64) - np.asarray(global_state[k], np.float64))
        ).astype(np.float32)
        for k in global_state
    }


DEFAULT_TRIM_FRACTION = 0.2


def aggregate(
    name: str,
    states: Sequence[AdapterState],
    weights: Sequence[float],
    trim_fraction: float = DEFAULT_TRIM_FRACTION,
) -> AdapterState:
    """Aggregate adapter states with the rule ``name`` (``federation.aggregation``).

    ``fedavg`` weights by ``weights`` (each ES's optimiser steps, or equal weights); ``trimmed_mean`` and
    ``median`` are coordinate-wise and unweighted, like Flower's FedTrimmedAvg/FedMedian:
    a weight is self-reported, and a robust rule must not let one ES buy influence with it.

    Raises
    ------
    ValueError
        For an unknown name (listing the choices) or states the rule cannot combine.
    """
    check_choice("federation.aggregation", name, AGGREGATORS)
    return AGGREGATORS[name](states, weights, trim_fraction)


AGGREGATORS: dict[str, Callable[[Sequence[AdapterState], Sequence[float], float], AdapterState]]
AGGREGATORS = {
    "fedavg": lambda states, weights, _: weighted_average(states, weights),
    "trimmed_mean": lambda states, _, fraction: trimmed_mean(states, fraction),
    "median": lambda states, _w, _f: coordinate_median(states),
}
"""Every ``federation.aggregation`` choice (the config schema derives its choices from it)."""
