"""Central differential privacy settings and the privacy budget they spend.

With DP on, the cloud clips every accepted update (module minus the global module) to an L2
norm of at most ``clipping_norm``, averages the k clipped updates with equal weights, and adds
Gaussian noise of standard deviation ``noise_multiplier * clipping_norm / k`` (Flower's
server-side fixed clipping). Each round is then a Gaussian mechanism with noise multiplier z
with respect to one ES's update, whose Renyi-DP at order a is a / (2 z^2) (Mironov 2017); the
rounds compose additively, and (a, rdp)-RDP gives (rdp + log(1/delta) / (a - 1), delta)-DP.
No amplification by sampling is claimed, so the bound is conservative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ORDERS = tuple(
    [
        1.25,
        1.5,
        1.75,
        2.0,
        2.5,
        3.0,
        4.0,
        5.0,
        6.0,
        8.0,
        10.0,
        12.0,
        16.0,
        20.0,
        24.0,
        32.0,
        48.0,
        64.0,
        128.0,
        256.0,
    ]
)


@dataclass
class PrivacyConfig:
    """Central DP with server-side fixed clipping (off by default)."""

    enabled: bool = False
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.noise_multiplier <= 0 or self.clipping_norm <= 0:
            raise ValueError("privacy.noise_multiplier and privacy.clipping_norm must be > 0")
        if not 0 < self.delta < 1:
            raise ValueError(f"privacy.delta must be in (0, 1), got {self.delta}")


def gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """(epsilon, delta)-DP after ``rounds`` Gaussian releases with multiplier z (see above)."""
    if rounds <= 0:
        return 0.0
    z2 = noise_multiplier**2
    return min(rounds * a / (2 * z2) + math.log(1 / delta) / (a - 1) for a in ORDERS)
