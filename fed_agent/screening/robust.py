"""Robust aggregation and update screening for LoRA adapter states (pure numpy, no flwr).

Two separate defences, because one cannot stand in for the other: Krum-like "pick the most central update" rules *select* free-riders, whose zero update
sits in the middle of the cloud, so free-riders are screened out explicitly here, and
poisoned updates that slip through screening are bounded by a coordinate-wise robust
aggregator (trimmed mean or median).

Screening looks at each update ``delta_i = state_i - global`` against the robust centre of
all updates (their coordinate-wise median):

- non-finite: NaN or Inf anywhere;
- stale: ``||delta_i||`` is (near) zero, absolutely or relative to the median update norm --
  the ES returned the global module (a free-rider);
- scaled: ``||delta_i||`` is far above the median update norm (boosting / model replacement);
- sign flip: the update points away from the centre (cosine below ``-min_cosine``);
- noise: the update is (nearly) uncorrelated with the centre (|cosine| below ``min_cosine``).

The norm and direction tests need a centre, so they run only when at least
``min_updates_for_outliers`` updates are screened together. One round's flag is evidence,
not proof (honest non-IID ESs are sometimes flagged); whoever pays should combine flags over
rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from fed_agent.protocol import AdapterState


class Verdict(StrEnum):
    """Why an update was screened out (``KEEP`` when it was not)."""

    KEEP = "keep"
    NON_FINITE = "non-finite"
    STALE = "stale"
    SCALED = "scaled"
    SIGN_FLIP = "sign-flip"
    NOISE = "noise"
    COPY = "copy"
    """(Nearly) parallel to another ES's update that arrived earlier (``expectations``)."""
    REPLAY = "replay"
    """(Nearly) parallel to the last global step (``expectations``)."""


@dataclass(frozen=True)
class ScreeningConfig:
    """Thresholds of update screening (see the module docstring for each test)."""

    stale_abs: float = 1e-6
    """An update whose norm is below this, relative to the global state's norm, is stale."""
    stale_ratio: float = 0.1
    """An update whose norm is below ``stale_ratio`` x the median update norm is stale."""
    norm_ratio: float = 4.0
    """An update whose norm is above ``norm_ratio`` x the median update norm is scaled."""
    min_cosine: float = 0.1
    """Cosine to the robust centre below ``-min_cosine`` is a sign flip, below +this noise."""
    min_updates_for_outliers: int = 3
    """Fewer updates than this have no meaningful centre: only non-finite/stale are tested."""

    def __post_init__(self) -> None:
        if not (self.stale_abs >= 0 and 0 <= self.stale_ratio < 1 < self.norm_ratio):
            raise ValueError(f"need stale_abs >= 0, 0 <= stale_ratio < 1 < norm_ratio: {self}")
        if not 0 <= self.min_cosine < 1 or self.min_updates_for_outliers < 2:
            raise ValueError(f"need 0 <= min_cosine < 1 and min_updates_for_outliers >= 2: {self}")


DEFAULT_SCREENING = ScreeningConfig()


class VerdictOutcome:
    """What every screening result says: whether its update is kept and, if not, why.

    A subclass has a ``verdict`` and names the figures it was judged on (:meth:`figures`).
    """

    verdict: Verdict

    @property
    def kept(self) -> bool:
        """Whether the update may be aggregated (and paid)."""
        return self.verdict is Verdict.KEEP

    @property
    def reason(self) -> str:
        """A log line saying why (empty when kept)."""
        return "" if self.kept else f"{self.verdict.value} update ({self.figures()})"

    def figures(self) -> str:
        """The figures behind the verdict, for :attr:`reason`."""
        raise NotImplementedError


@dataclass(frozen=True)
class Screened(VerdictOutcome):
    """One update's screening result and the statistics it was judged on."""

    verdict: Verdict
    norm: float
    cosine: float
    """Cosine to the robust centre (NaN when not computed)."""
    median_norm: float

    def figures(self) -> str:  # noqa: D102 -- VerdictOutcome's
        return (
            f"norm {self.norm:.3g}, median norm {self.median_norm:.3g}, cosine to centre "
            f"{self.cosine:.3g}"
        )


def flatten(state: Mapping[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """The tensors of ``state`` for ``keys``, concatenated into one float64 vector."""
    return np.concatenate([np.asarray(state[k], dtype=np.float64).ravel() for k in keys])


def unflatten(flat: np.ndarray, like: Mapping[str, np.ndarray]) -> AdapterState:
    """A :func:`flatten` vector back into float32 tensors shaped and ordered like ``like``."""
    out, offset = {}, 0
    for key, value in like.items():
        out[key] = flat[offset : offset + value.size].reshape(value.shape).astype(np.float32)
        offset += value.size
    return out


def _stack(states: Sequence[Mapping[str, np.ndarray]], key: str) -> np.ndarray:
    return np.stack([np.asarray(s[key], dtype=np.float64) for s in states])


def _check_same_keys(states: Sequence[Mapping[str, np.ndarray]]) -> list[str]:
    if not states:
        raise ValueError("cannot aggregate zero adapter states")
    keys = list(states[0])
    if any(list(s) != keys for s in states[1:]):
        raise ValueError("adapter states have different keys")
    return keys


def coordinate_median(states: Sequence[Mapping[str, np.ndarray]]) -> AdapterState:
    """Coordinate-wise median of adapter states (unweighted, like Flower's FedMedian).

    Raises
    ------
    ValueError
        For no states or mismatched keys (shapes must agree for numpy to stack them).
    """
    keys = _check_same_keys(states)
    return {k: np.median(_stack(states, k), axis=0).astype(np.float32) for k in keys}


def trimmed_mean(
    states: Sequence[Mapping[str, np.ndarray]], trim_fraction: float = 0.2
) -> AdapterState:
    """Coordinate-wise trimmed mean: drop the ``floor(trim_fraction * n)`` lowest and highest.

    With few states nothing may be trimmed (n=2, fraction 0.2) and the result is the plain
    mean; that is the documented limit of the rule, not an error.

    Raises
    ------
    ValueError
        For no states, mismatched keys, or a fraction outside [0, 0.5).
    """
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    keys = _check_same_keys(states)
    cut = int(np.floor(trim_fraction * len(states)))
    out = {}
    for k in keys:
        ordered = np.sort(_stack(states, k), axis=0)
        out[k] = ordered[cut : len(states) - cut].mean(axis=0).astype(np.float32)
    return out


def screen(
    states: Sequence[Mapping[str, np.ndarray]],
    global_state: Mapping[str, np.ndarray],
    cfg: ScreeningConfig = DEFAULT_SCREENING,
    scales: Sequence[float] | None = None,
) -> list[Screened]:
    """Screen each state's update against the global state and the robust centre.

    The states must already have the global state's keys and shapes (reply validation's
    job); this only judges their values. Returns one result per state, in order.

    ``scales`` (one positive number per state, e.g. the local steps each ES was contracted
    for) divides each update norm before the norm tests, so that ESs asked for different
    effort are compared fairly: a 1-step update is not "stale" next to 20-step ones, nor a
    20-step update "scaled". The direction tests and the exact-copy test ignore it.
    """
    if scales is not None and (
        len(scales) != len(states) or not all(np.isfinite(x) and x > 0 for x in scales)
    ):
        raise ValueError(f"scales must be {len(states)} positive numbers, got {scales}")
    keys = list(global_state)
    reference = flatten(global_state, keys)
    with np.errstate(invalid="ignore", over="ignore"):
        deltas = [flatten(s, keys) - reference for s in states]
    finite = [bool(np.isfinite(d).all()) for d in deltas]
    raw = np.array(
        [np.linalg.norm(d) if ok else np.inf for d, ok in zip(deltas, finite, strict=True)]
    )
    norms = raw / (np.asarray(scales, dtype=np.float64) if scales is not None else 1.0)
    stale_floor = cfg.stale_abs * max(float(np.linalg.norm(reference)), 1.0)
    live = [i for i, ok in enumerate(finite) if ok and raw[i] > stale_floor]
    median_norm = float(np.median(norms[live])) if live else 0.0
    centre = np.median(np.stack([deltas[i] for i in live]), axis=0) if live else None
    centre_norm = float(np.linalg.norm(centre)) if centre is not None else 0.0
    with_outliers = len(live) >= cfg.min_updates_for_outliers and centre_norm > 0
    results = []
    for i, delta in enumerate(deltas):
        cosine = float("nan")
        if with_outliers and finite[i] and raw[i] > 0:
            cosine = float(delta @ centre / (raw[i] * centre_norm))
        unchanged = finite[i] and raw[i] <= stale_floor
        verdict = _verdict(finite[i], unchanged, norms[i], cosine, median_norm, cfg, with_outliers)
        results.append(Screened(verdict, float(norms[i]), cosine, median_norm))
    return results


def _verdict(
    finite: bool,
    unchanged: bool,
    norm: float,
    cosine: float,
    median_norm: float,
    cfg: ScreeningConfig,
    with_outliers: bool,
) -> Verdict:
    if not finite:
        return Verdict.NON_FINITE
    if unchanged or (with_outliers and norm < cfg.stale_ratio * median_norm):
        return Verdict.STALE
    if not with_outliers:
        return Verdict.KEEP
    # direction before size: a -4x flip is also large, and its direction is the worse fault
    if cosine < -cfg.min_cosine:
        return Verdict.SIGN_FLIP
    if cosine < cfg.min_cosine:
        return Verdict.NOISE
    if norm > cfg.norm_ratio * median_norm:
        return Verdict.SCALED
    return Verdict.KEEP
