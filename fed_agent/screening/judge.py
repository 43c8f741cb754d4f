"""The cloud's own expectations of an honest update: every reply is judged, however few arrive.

Median-based screening (:mod:`fed_agent.screening.robust`) needs a centre that honest ESs
dominate. With one or two participants there is none, and colluders who send one shared update
*become* the centre. Here each update ``delta_i = state_i - global`` is judged against what the
cloud itself expects, from its own data and from earlier rounds:

- direction: its cosine to the cloud's *reference update*, the global module trained for a few
  steps on the cloud's own small split (FLTrust's server update, Cao et al., NDSS 2021). An
  update below the fixed floor (``min_reference_cosine``, or ``random_cosine_sigmas`` standard
  deviations of a random direction's cosine, 1/sqrt(D), when that is larger) is ``noise`` (or,
  below its negative, ``sign-flip``), and so is one below ``cosine_fraction`` x the *expected*
  cosine: the median cosine of this round's updates past the fixed floor (an honest majority
  sets it; a lone update is judged by the fixed floor and its norm only). Earlier rounds do
  not set it because honest agreement falls fast as the module converges (about 0.65 in
  round 1 to 0.19 in round 2 of a 20-ES run). Measured (``benchmarks/screen_agreement_bench.py``):
  honest updates agree with the reference at 0.65-0.81 from the fresh default module and
  0.17-0.37 from a converged one, no worse than with each other and whatever the size of the
  cloud's split; a random direction sits at 0 +- 0.003 (D = 155,648). Near convergence some
  honest replies fall to chance (2 of 100 over 5 seeds of the default run were rejected).
  The relative limit holds back an attacker that sends a mostly junk update (it must carry
  about 0.3 of its own honest update's direction); clipping bounds the rest;
- size: its norm over the norm expected of its contracted effort (the learning-rate sum of its
  contracted optimiser steps, ``training.learning_effort``; never the ES's claim), divided by
  the median of that ratio among the updates accepted in the last ``history_rounds`` rounds.
  The expected norm is what the reference itself reached at that effort: it records its norm
  after 1, 2, 4, ... steps (interpolated in log-log, carried past its last step by the growth
  of its last doublings). An Adam update at a constant rate grows about in proportion to its
  first steps and far less later (the default module, fresh and at accuracy 0.94: 1.09-1.42x
  per doubling of 25-400 steps), so a norm linear in effort called an honest ES of half the
  median effort ``scaled`` (norm 2.17x). Below ``low_norm_ratio`` it is ``stale``
  (a free-rider's zero or shrunken update), above ``high_norm_ratio`` ``scaled`` (boosting).
  The price of the weak growth: an ES that trains far fewer steps than contracted (at
  ~1.2x per doubling, a tenth of them gives ~0.55x the norm) still passes the norm check; it
  is paid for steps it did not take, though its update is honest in direction;
- replays: an update (nearly) parallel to the last global step is a ``replay`` of the round
  before. Copies of a peer, scaled copies and means of peers are not judged one by one: the
  round's updates are settled as a set (:mod:`fed_agent.screening.settlement`), whatever the
  order they arrived in.

An accepted update is clipped to ``clip_ratio`` x its expected norm before it is aggregated, so
an update that hugs the limits weighs no more than an honest one (the robust rule; with honest
norms within a few per cent of the expectation it leaves them unchanged).

Measured on the smoke model (10 non-IID ESs, 20 local steps, cloud split of 64 scenes, 3
rounds): honest cosines to the reference 0.74-0.99, norm ratios 0.96-1.04, pairwise cosines
between honest ESs up to 0.989 (hence ``copy_cosine`` 0.999). The thresholds below leave a wide
margin around those figures; an attacker inside them is bounded, not excluded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fed_agent.screening.config import ScreeningConfig
from fed_agent.screening.robust import Verdict, VerdictOutcome


@dataclass(frozen=True)
class Reference:
    """The cloud's reference update of one round (flattened), the effort it took and how its
    norm grew on the way."""

    delta: np.ndarray
    effort: float
    """The learning-rate sum of its steps (``training.learning_effort``)."""
    growth: tuple[tuple[float, float], ...] = ()
    """(effort, norm of the update so far) after 1, 2, 4, ... steps and the last (empty: only
    the end point is known)."""
    path: tuple[tuple[float, np.ndarray], ...] = ()
    """(effort, unit direction of the update so far) at the points of ``growth`` (empty: not
    recorded): where an update's direction lies along the reference's own path
    (:func:`fed_agent.screening.settlement.effort_fractions`)."""

    @property
    def norm(self) -> float:
        """The reference's update norm."""
        return float(np.linalg.norm(self.delta))

    def norm_at(self, effort: float, exponent: float) -> float:
        """The norm an honest update of ``effort`` is expected to reach: the reference's own
        growth, interpolated in log-log; past its last point, grown with the slope of its
        last two doublings (within [0, 1]); before its first point, in proportion (Adam's
        first steps move every coordinate alike). Without a growth record: the end point
        grown as effort ** ``exponent``."""
        if not self.growth:
            return self.norm * (effort / self.effort) ** exponent
        points = self.growth
        x = np.log([e for e, _ in points])
        y = np.log([max(n, np.finfo(float).tiny) for _, n in points])
        at = np.log(effort)
        if at <= x[0]:
            return float(np.exp(y[0] + (at - x[0])))
        if at <= x[-1]:
            return float(np.exp(np.interp(at, x, y)))
        if len(x) >= 2:
            tail = slice(-3, None)
            exponent = float(np.clip(np.polyfit(x[tail], y[tail], 1)[0], 0.0, 1.0))
        return float(np.exp(y[-1] + exponent * (at - x[-1])))


@dataclass(frozen=True)
class Judged(VerdictOutcome):
    """One update's verdict and the figures it was judged on."""

    verdict: Verdict
    norm_ratio: float
    """Norm over the expected norm of the contracted effort (NaN when not finite)."""
    cosine: float
    """Cosine to the reference update (NaN when not computed)."""
    detail: str = ""

    def figures(self) -> str:  # noqa: D102 -- VerdictOutcome's
        extra = f", {self.detail}" if self.detail else ""
        return (
            f"norm {self.norm_ratio:.3g} x expected, cosine to the cloud's reference "
            f"{self.cosine:.3g}{extra}"
        )


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norms) if norms > 0 else 0.0


@dataclass
class UpdateScreen:
    """What the cloud expects of an honest update; calibrated by the rounds it has judged."""

    cfg: ScreeningConfig = field(default_factory=ScreeningConfig)
    ratios: list[float] = field(default_factory=list)
    """Median norm ratio of the accepted updates of each earlier round (newest last)."""

    @property
    def calibration(self) -> float:
        """The accepted norm ratio of recent rounds (1 before any round was judged)."""
        recent = self.ratios[-self.cfg.history_rounds :]
        return float(np.median(recent)) if recent else 1.0

    def expected_norm(self, effort: float, reference: Reference) -> float:
        """The norm an honest update of ``effort`` (learning-rate sum) is expected to have."""
        return self.calibration * reference.norm_at(effort, self.cfg.norm_effort_exponent)

    def judge(
        self,
        deltas: Sequence[np.ndarray],
        efforts: Sequence[float],
        reference: Reference,
        last_step: np.ndarray | None = None,
    ) -> list[Judged]:
        """Judge each update against the expectations (the order of ``deltas`` does not matter).

        ``efforts`` are the contracted efforts of each update's ES (learning-rate sums of the
        contracted steps); ``last_step`` is the previous round's change of the global module
        (None in a run's first round).
        """
        if len(efforts) != len(deltas) or not all(np.isfinite(e) and e > 0 for e in efforts):
            raise ValueError(f"efforts must be {len(deltas)} positive numbers, got {efforts}")
        results: list[Judged] = []
        for i, delta in enumerate(deltas):
            if not np.isfinite(delta).all():
                results.append(Judged(Verdict.NON_FINITE, float("nan"), float("nan")))
                continue
            ratio = float(np.linalg.norm(delta)) / max(
                self.expected_norm(efforts[i], reference), np.finfo(float).tiny
            )
            cosine = _cosine(delta, reference.delta)
            verdict, detail = self._verdict(ratio, cosine, self.cosine_floor(delta.size))
            results.append(Judged(verdict, ratio, cosine, detail))
        return self._against_expected_cosine(deltas, results, last_step)

    def expected_cosine(self, judged: Sequence[Judged]) -> float:
        """The median cosine of this round's updates past the fixed limits (NaN if none)."""
        passing = [j.cosine for j in judged if j.kept]
        return float(np.median(passing)) if passing else float("nan")

    def _against_expected_cosine(
        self, deltas: Sequence[np.ndarray], judged: list[Judged], last_step: np.ndarray | None
    ) -> list[Judged]:
        """Second pass over the updates within the fixed limits: the expected cosine, then
        replays."""
        floor = self.cfg.cosine_fraction * self.expected_cosine(judged)
        results: list[Judged] = []
        for i, j in enumerate(judged):
            if j.kept and j.cosine < floor:
                j = Judged(Verdict.NOISE, j.norm_ratio, j.cosine, f"expected >= {floor:.3g}")
            elif j.kept and last_step is not None:
                if _cosine(deltas[i], last_step) >= self.cfg.copy_cosine:
                    detail = "parallel to the last global step"
                    j = Judged(Verdict.REPLAY, j.norm_ratio, j.cosine, detail)
            results.append(j)
        return results

    def cosine_floor(self, size: int) -> float:
        """The fixed cosine floor for an update of ``size`` parameters."""
        return max(self.cfg.min_reference_cosine, self.cfg.random_cosine_sigmas / np.sqrt(size))

    def _verdict(self, ratio: float, cosine: float, floor: float) -> tuple[Verdict, str]:
        cfg = self.cfg
        if ratio < cfg.low_norm_ratio:
            return Verdict.STALE, ""
        if cosine < -floor:
            return Verdict.SIGN_FLIP, ""
        if cosine < floor:
            return Verdict.NOISE, ""
        if ratio > cfg.high_norm_ratio:
            return Verdict.SCALED, ""
        return Verdict.KEEP, ""

    def clip(self, delta: np.ndarray, effort: float, reference: Reference) -> np.ndarray:
        """``delta`` shrunk to at most ``clip_ratio`` x its expected norm."""
        limit = self.cfg.clip_ratio * self.expected_norm(effort, reference)
        norm = float(np.linalg.norm(delta))
        return delta * (limit / norm) if norm > limit else delta

    def record(self, judged: Sequence[Judged]) -> None:
        """Calibrate the expected norm with this round's accepted updates."""
        kept = [j for j in judged if j.kept]
        if kept:
            self.ratios.append(float(np.median([j.norm_ratio for j in kept])) * self.calibration)
            del self.ratios[: -self.cfg.history_rounds]

    def state_dict(self) -> dict:
        """JSON-ready state (the calibration history)."""
        return {"ratios": list(self.ratios)}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`."""
        self.ratios = [float(r) for r in state["ratios"]]
