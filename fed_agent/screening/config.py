"""Thresholds of judging ES updates against the cloud's expectations (``screening.*``).

The reasons for each default are in :mod:`fed_agent.screening.judge`; this module holds
the plain dataclass only, so that the config schema stays free of torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fed_agent.validation import check_flags, check_number

MAX_SIGMAS = 40.0
"""The most deviations of chance a ``screening.*_sigmas`` may ask: a normal tail beyond
about 38 is below the smallest float64, so larger values only switch a check off or make
it refuse everything."""


@dataclass
class ScreeningConfig:
    """Thresholds of judging updates against the cloud's expectations (:mod:`fed_agent.screening.judge`)."""

    min_reference_cosine: float = 0.0
    """Cosine to the reference update below this is noise, below its negative a flip; the
    floor is never below ``random_cosine_sigmas`` / sqrt(D)."""
    random_cosine_sigmas: float = 6.0
    """The fixed floor is at least this many standard deviations (1/sqrt(D) for D parameters) of
    the cosine of a random direction: 0.015 for the default module (D = 155,648)."""
    cosine_fraction: float = 0.3
    """Cosine below this x the expected cosine (see :mod:`fed_agent.screening.judge`) is
    noise too. Honest updates of one round of the default run measured down to 0.39x the
    round's median (5 seeds)."""
    low_norm_ratio: float = 0.5
    """Norm below this x the expected norm of the contracted effort: stale."""
    high_norm_ratio: float = 2.0
    """Norm above this x the expected norm of the contracted effort: scaled."""
    clip_ratio: float = 1.25
    """Accepted updates are clipped to this x their expected norm before aggregation."""
    copy_cosine: float = 0.999
    """Cosine to the last global step at or above this is a replay of the round before."""
    dependence_tolerance: float = 0.05
    """An update whose unit vector lies within this of the span of one or two others' depends on
    them: copies (cosine >= 0.9987), scaled copies, means of two peers
    (:mod:`fed_agent.screening.dependence`). Honest ESs of the smoke model (20 non-IID ESs, 16
    steps) lie >= 0.18 from the span of their two nearest peers; pairs reach cosine 0.983
    (0.18 from each other's span)."""
    near_copy_sigmas: float = 6.0
    """A pair of updates is a near-copy when the other updates explain less of its difference
    than this many standard deviations above what they explain of a random direction
    (:mod:`fed_agent.screening.dependence`): 0.030 for 20 ESs of the smoke model, where honest
    pairs measured >= 0.27 (``benchmarks/robustness_settlement.py --similarity``)."""
    near_copy_cosine: float = 0.9
    """Only pairs of updates at this cosine or more are tested for near-copies (a peer's update
    with up to 19 % of its energy replaced by noise); honest smoke-model pairs reach 0.99."""
    near_copy_min_updates: int = 12
    """Near-copies are looked for only in rounds of at least this many kept updates (after
    exact copies are taken as one): with few others, the others explain little of an honest
    pair's difference either. Smoke model (``benchmarks/robustness_settlement.py
    --similarity``, 150 random rounds of each size, seeds 0-1): the smallest honest share 0.040
    and 0.063 in rounds of 12 (limit 0.021), 0.017 and 0.023 in rounds of 8 (limit 0.015), and
    honest pairs were taken for near-copies in 69 and 120 of 150 rounds of 3."""
    near_copy_max_noise_share: float = 0.001
    """Rounds of fewer than ``near_copy_min_updates`` kept updates (three or more) are searched
    for near-copies too when the round's other updates explain at most this share of a random
    direction (the noise limit: mean plus ``near_copy_sigmas`` deviations,
    :func:`fed_agent.screening.dependence.noise_share_limit`): a module so large that noise
    lies almost wholly outside a few updates. Measured over rounds of 4 of 10 ESs
    (``benchmarks/near_copy_rounds.py``): the default module (D = 155,648; limit 0.00009 with
    two others) never had two honest updates at ``near_copy_cosine`` (largest 0.79; 3 seeds x
    4 rounds, and 3 rounds of near-IID data) and every near-copy was found; the smoke model
    (D = 1,792; limit 0.0078) had close honest pairs the others explained less of than the
    limit in 13 of 50 rounds, so it is searched in rounds of ``near_copy_min_updates`` or
    more only."""
    origin_sigmas: float = 4.0
    """A class of near-copies is worth one update, held by its original: the member with the
    least part the round's other updates do not explain, when every other member's is larger
    and none's explained part smaller, each by more than this many deviations of chance; else
    shared equally (:func:`fed_agent.screening.dependence._originals`). Smoke model, rounds
    of 20 with 2-9 near-copiers at cosine 0.99 and 0.95, seeds 0-2: every original found
    (``benchmarks/robustness_settlement.py``); copies scaled to 0.1-1x or pushed along the
    ESs' common direction never take the original's place
    (``tests/screening/test_dependence.py``)."""
    mean_support_cosine: float = 0.45
    """A member of a group of exactly dependent updates that lies in the cone of others (a
    mean of peers) holds only what its peers leave when its own part (what the round's
    other updates do not explain) has at least this cosine with each peer's; else the group
    shares its worth equally (:func:`fed_agent.screening.dependence.group_worths`). Smoke
    model, round 1, seeds 0-2 (``benchmarks/robustness_settlement.py --similarity 20``):
    a mean's with its two peers' 0.57-0.92; the two honest peers' with each other's
    -0.35-0.55, which is what an extrapolation ``2p - q`` framing ``p`` as the mean meets."""
    quality_clause: bool = False
    """Pay each kept update by its own gain on the cloud's split against the gain its effort
    promises (below ``quality_tolerance``: in proportion; no gain: rejected). Off by default:
    on the main job (4 non-IID ESs a round, a 64-scene cloud split, 5 seeds) 9 of 100 honest
    updates raised the loss of the cloud's split on their own and were rejected, though the
    round's average of them improved it; on the smoke model's 20 ESs none was in round 1, but
    their gains spread as the module learns: over 8 rounds of FedAvg the clause would cut
    1-9 of 20 honest updates a round from round 5-7 on, to as little as 0.26x (seeds 0-2,
    ``benchmarks/robustness_settlement.py --over-rounds 8``)."""
    quality_tolerance: float = 0.15
    """An update whose gain on the cloud's split is at least (1 - this) x its expected gain is
    paid in full, a smaller one in proportion to its gain. Honest gains of the smoke model
    measured 0.91-1.04x the round's median (20 ESs)."""
    effort_clause: bool = False
    """Pay each kept update by the effort its direction shows: along the cloud's reference
    path (its update after 1, 2, 4, ... steps), an honest update is closest to the point of
    its own contracted effort, and an update of a few steps stretched to the expected norm
    is closest to an early point; one whose cosine there falls short of its best by more
    than ``effort_tolerance`` is paid that best point's effort over its contracted effort
    (``fed_agent.screening.settlement.effort_fractions``; void for an update contracted past
    the reference's ``max_reference_steps``). Off by default: it is measured in round 1 of
    the smoke model (``benchmarks/robustness_settlement.py``), where it catches updates of
    1-2 of 16 steps and misses those of 3-4, and after round 1 it catches little (stretched
    replies paid 1.62-6.00 of 6 in rounds 2-8, no honest update cut; ``--over-rounds 8``);
    on the main job, whose ESs are contracted at least 96 steps (480 x f / f_max, f >= 1
    GHz) against the reference's 64, it is void."""
    effort_tolerance: float = 0.1
    """An update whose cosine to the reference's point of its effort is at least (1 - this)
    x its best cosine along the path is paid in full by the effort clause. Smoke model, round
    1, 20 ESs of 16 steps, seeds 0-2 (``benchmarks/robustness_settlement.py``, ``effort``
    rows): no honest update is cut; stretched updates of 1-2 steps mostly are, of 3-4 not."""
    min_quality_peers: int = 3
    """The expected gain is the median gain per expected norm of at least this many updates
    of the round; with fewer the quality clause is void (full pay)."""
    history_rounds: int = 5
    """Rounds of accepted norm ratios that calibrate the expected norm."""
    reference_samples: int = 64
    """Scenes in the cloud's own split (``fed_agent.data.partition.cloud_examples``)."""
    norm_effort_exponent: float = 0.3
    """Without a growth record of the reference, an honest update's norm grows as its effort to
    this power (the default module: 1.09-1.42x per doubling of 25-400 steps)."""
    max_reference_steps: int = 64
    """The reference update takes the most steps any ES of the round is contracted to, at most
    this many. Its norm after 1, 2, 4, ... steps is the expected norm of an ES of that effort
    (Adam's first steps grow it almost in proportion, later ones far less); past the cap the
    growth of its last doublings carries on. The cloud trains it while the ESs train
    (``strategies/reference_job.py``): 64 steps take ~4 s of the default run's rounds."""

    def __post_init__(self) -> None:
        check_flags("screening", self)
        for name in ("min_reference_cosine", "cosine_fraction"):
            check_number(f"screening.{name}", getattr(self, name), 0, 1, ends="[)")
        for name in ("random_cosine_sigmas", "near_copy_sigmas", "origin_sigmas"):
            check_number(f"screening.{name}", getattr(self, name), 0, MAX_SIGMAS)
        check_number("screening.low_norm_ratio", self.low_norm_ratio, 0, 1, ends="()")
        check_number("screening.clip_ratio", self.clip_ratio, 1)
        check_number("screening.high_norm_ratio", self.high_norm_ratio, self.clip_ratio)
        check_number("screening.copy_cosine", self.copy_cosine, 0, 1, ends="(]")
        check_number("screening.near_copy_max_noise_share", self.near_copy_max_noise_share, 0, 1)
        check_number("screening.norm_effort_exponent", self.norm_effort_exponent, 0, 1)
        for name in (
            "dependence_tolerance",
            "quality_tolerance",
            "near_copy_cosine",
            "effort_tolerance",
            "mean_support_cosine",
        ):
            check_number(f"screening.{name}", getattr(self, name), 0, 1, ends="[)")
        for name in (
            "history_rounds",
            "reference_samples",
            "max_reference_steps",
            "min_quality_peers",
            "near_copy_min_updates",
        ):
            check_number(f"screening.{name}", getattr(self, name), 1, integer=True)

    def check_module(self, size: int) -> None:
        """Refuse settings under which every update of a module of ``size`` parameters is
        noise: a fixed cosine floor (``random_cosine_sigmas`` / sqrt(size)) of 1 or more."""
        floor = self.random_cosine_sigmas / np.sqrt(size)
        if not floor < 1:
            raise ValueError(
                f"screening.random_cosine_sigmas={self.random_cosine_sigmas:g} puts the cosine "
                f"floor at {floor:.3g} for this module's {size} parameters, so every update "
                f"would be rejected as noise; use at most {np.sqrt(size) / 2:.3g} (a floor of 0.5)"
            )

    def steps_for(self, contracted: Sequence[int]) -> int:
        """The reference's steps for a round whose ESs contract ``contracted`` steps."""
        most = max(contracted, default=self.max_reference_steps)
        return max(1, min(self.max_reference_steps, int(most)))
