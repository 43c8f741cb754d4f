"""95 % intervals for accuracies: the one helper every table and doc of accuracies uses."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

Z_95 = 1.959963984540054
"""The standard normal quantile of 0.975: a two-sided 95 % interval."""


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (95 % for the default ``z``).

    Unlike the normal approximation it stays inside [0, 1] and keeps a non-zero width at an
    accuracy of 0 or 1 (an agent right on all 500 held-out scenes gets [0.992, 1.0]).

    Parameters
    ----------
    successes : float
        Correct answers; a mean accuracy times ``n`` is accepted (non-integer).
    n : int
        Independent trials (held-out decisions); 0 gives (NaN, NaN).

    Raises
    ------
    ValueError
        For ``n < 0`` or ``successes`` outside [0, n].
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 0, got {successes} of {n}")
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(accuracy: float, n: int) -> tuple[float, float]:
    """The Wilson 95 % interval of an ``accuracy`` measured on ``n`` decisions (NaN-safe)."""
    if n == 0 or math.isnan(accuracy):
        return math.nan, math.nan
    return wilson_interval(accuracy * n, n)


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of per-seed ``values`` (n - 1 degrees of freedom).

    One value gives (value, value): no spread to estimate, so no interval is claimed.
    """
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float(values.mean()), float(values.mean())
    half = stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)
