"""Thresholds of judging ES updates against the cloud's expectations (``screening.*``).

The reasons for each default are in :mod:`fed_agent.modules.expectations`; this module holds
the plain dataclass only, so that the config schema stays free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExpectationConfig:
    """Thresholds of judging updates against the cloud's expectations (:mod:`fed_agent.modules.expectations`)."""

    min_reference_cosine: float = 0.05
    """Cosine to the reference update below this is noise, below its negative a flip (the floor
    is raised to ``random_cosine_sigmas`` / sqrt(D) for small modules)."""
    random_cosine_sigmas: float = 6.0
    """The fixed floor is at least this many standard deviations (1/sqrt(D) for D parameters) of
    the cosine of a random direction."""
    cosine_fraction: float = 0.5
    """Cosine below this x the expected cosine (see :mod:`fed_agent.modules.expectations`) is noise too."""
    quorum: int = 3
    """Updates past the fixed floor that let a round set its own expected cosine; a smaller round
    is held to the last round's accepted median cosine."""
    low_norm_ratio: float = 0.5
    """Norm below this x the expected norm of the contracted effort: stale."""
    high_norm_ratio: float = 2.0
    """Norm above this x the expected norm of the contracted effort: scaled."""
    clip_ratio: float = 1.25
    """Accepted updates are clipped to this x their expected norm before aggregation."""
    copy_cosine: float = 0.999
    """Cosine to an earlier reply of the round (or to the last global step) at or above this is a
    copy (a replay)."""
    history_rounds: int = 5
    """Rounds of accepted norm ratios that calibrate the expected norm."""
    reference_samples: int = 64
    """Scenes in the cloud's own split (``fed_agent.data.partition.cloud_examples``)."""
    norm_effort_exponent: float = 0.3
    """An honest update's norm grows as its effort to this power (:mod:`fed_agent.modules.expectations`)."""
    max_reference_steps: int = 64
    """The reference update takes the round's median contracted steps, at most this many (its
    norm is carried to other efforts by ``norm_effort_exponent``). It is the cloud's own
    training every round: 64 steps cost the default run ~4 s a round, against ~13 s for the
    ESs' median of ~100-200 steps, with every honest reply still kept."""

    def __post_init__(self) -> None:
        if not (0 <= self.min_reference_cosine < 1 and 0 <= self.cosine_fraction < 1):
            raise ValueError(f"min_reference_cosine and cosine_fraction must be in [0, 1): {self}")
        if not (self.random_cosine_sigmas >= 0 and self.quorum >= 1):
            raise ValueError(f"need random_cosine_sigmas >= 0 and quorum >= 1: {self}")
        if not 0 < self.low_norm_ratio < 1 <= self.clip_ratio <= self.high_norm_ratio:
            raise ValueError(
                f"need 0 < low_norm_ratio < 1 <= clip_ratio <= high_norm_ratio: {self}"
            )
        if not 0 < self.copy_cosine <= 1:
            raise ValueError(f"copy_cosine must be in (0, 1]: {self}")
        if not 0 <= self.norm_effort_exponent <= 1:
            raise ValueError(f"norm_effort_exponent must be in [0, 1]: {self}")
        if min(self.history_rounds, self.reference_samples, self.max_reference_steps) < 1:
            raise ValueError(f"history, reference samples and steps must be >= 1: {self}")
