"""Transition matrices of willingness types: P[i, j] = Pr(period-2 type j | period-1 type i).

Two families, pure numpy (every other module of ``fed_agent.contracts`` may import this one):

- :func:`neighbour_transition`: ``stay`` on the diagonal, the rest on the neighbouring types
  (the ``persistent`` named market's: monotone, so a static menu is nearly optimal there).
- :func:`persistence_transition`: one parameter, the persistence p in [-1, 1], from perfectly
  persistent types through i.i.d. types to a reversal of willingness. With the prior rho as
  the i.i.d. part (every row of ``1 rho^T`` is the prior) and J the anti-diagonal reversal
  (type i goes to type K-1-i)::

      P(p) = p I + (1 - p) 1 rho^T        for 0 <= p <= 1
      P(p) = |p| J + (1 - |p|) 1 rho^T    for -1 <= p < 0

  so p = 1 is the identity, p = 0 draws the period-2 type afresh from the prior, and p = -1
  is the pure reversal: an ES with spare capacity in period 1 (a high type) is loaded in
  period 2 (a low type) and vice versa. For odd K the middle type is its own mirror image.
  docs/contract-model.md ("Where dynamics pay off") shows where on this family the dynamic
  contract beats a static menu.
"""

from __future__ import annotations

import numpy as np


def neighbour_transition(num_types: int, stay: float) -> np.ndarray:
    """The default transition matrix: ``stay`` on the diagonal, the rest split evenly over the
    neighbouring types (an end type gives it all to its single neighbour)."""
    if num_types == 1:
        return np.ones((1, 1))
    matrix = np.zeros((num_types, num_types))
    for i in range(num_types):
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < num_types]
        matrix[i, i] = stay
        matrix[i, neighbours] = (1.0 - stay) / len(neighbours)
    return matrix


PERSISTENCE_RANGE = (-1.0, 1.0)
_PROB_TOL = 1e-8


def _check_num_types(num_types: int) -> int:
    if int(num_types) != num_types or num_types < 2:
        raise ValueError(f"num_types: a market family needs an integer K >= 2, got {num_types!r}")
    return int(num_types)


def _check_persistence(persistence: float) -> float:
    low, high = PERSISTENCE_RANGE
    value = float(persistence)
    if not (np.isfinite(value) and low <= value <= high):
        raise ValueError(
            f"persistence: must lie in [{low:g}, {high:g}] (1 persistent, 0 i.i.d., "
            f"-1 reversal), got {persistence!r}"
        )
    return value


def _check_prior(prior: object | None, num_types: int) -> np.ndarray:
    if prior is None:
        return np.full(num_types, 1.0 / num_types)
    array = np.asarray(list(prior), dtype=float)  # list(...) also takes OmegaConf lists
    if array.shape != (num_types,):
        raise ValueError(f"prior: expected shape ({num_types},), got {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0) or abs(array.sum() - 1) > _PROB_TOL:
        raise ValueError(
            f"prior: must be a probability vector (entries >= 0, sum 1), got {array.tolist()}"
        )
    return array


def reversal_matrix(num_types: int) -> np.ndarray:
    """J, the anti-diagonal permutation: period-1 type i becomes period-2 type K-1-i."""
    return np.eye(_check_num_types(num_types))[::-1].copy()


def persistence_transition(
    num_types: int, persistence: float, prior: object | None = None
) -> np.ndarray:
    """The transition matrix P(p) of the persistence family (see the module docstring).

    Parameters
    ----------
    num_types : int
        K >= 2.
    persistence : float
        p in [-1, 1]: 1 = identity (persistent), 0 = every row is the prior (i.i.d.),
        -1 = the reversal J (anti-persistent).
    prior : sequence of float, optional
        The i.i.d. part of each row (the market's prior rho); uniform when omitted.

    Returns
    -------
    np.ndarray
        A row-stochastic K x K matrix, P[i, j] = Pr(period-2 type j | period-1 type i).
    """
    k = _check_num_types(num_types)
    p = _check_persistence(persistence)
    rho = _check_prior(prior, k)
    structure = np.eye(k) if p >= 0 else reversal_matrix(k)
    return abs(p) * structure + (1.0 - abs(p)) * np.tile(rho, (k, 1))


def iid_transition(num_types: int, prior: object | None = None) -> np.ndarray:
    """I.i.d. types: every row of P is the prior (persistence 0)."""
    return persistence_transition(num_types, 0.0, prior)
