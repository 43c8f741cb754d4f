"""Central differential privacy settings and the privacy budget they spend.

With DP on, the cloud clips every accepted update (module minus the global module) to an L2
norm of at most ``clipping_norm``, averages the k clipped updates with equal weights, and adds
Gaussian noise of standard deviation ``noise_multiplier * clipping_norm / k`` (Flower's
server-side fixed clipping). Each release (a round that produced a module) is then a Gaussian
mechanism with noise multiplier z with respect to one ES's update.

The budget is accounted by Google's ``dp-accounting`` (Renyi DP at its default orders and its
conversion to (epsilon, delta)). An ES's update can only be in a round if the round's seeded,
uniform sample of offers picked the ES: ``incentive.max_offers_per_round`` of the at least
``federation.min_available_es`` connected ESs, a rate q of at most their ratio
(:func:`offer_sampling_rate`); offers targeted at the ESs worth most
(``incentive.offer_targeting=surplus``) are no random sample, and the rate is then 1. A period-2
round offers again to the ESs of its epoch's period-1 round, so the sample is drawn once per
contract epoch: each epoch is one Poisson-sampled Gaussian at rate q whose multiplier is that of
the epoch's r releases composed, z / sqrt(r), and the epochs compose. The sample has a fixed
size, for which Poisson sampling at its rate is the usual approximation; at q = 1 (the default:
every connected ES gets an offer) no amplification is claimed and the account is exact RDP
composition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fed_agent.validation import check_flags, check_number


@dataclass
class PrivacyConfig:
    """Central DP with server-side fixed clipping (off by default)."""

    enabled: bool = False
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        check_flags("privacy", self)
        check_number("privacy.noise_multiplier", self.noise_multiplier, 0, ends="()")
        check_number("privacy.clipping_norm", self.clipping_norm, 0, ends="()")
        check_number("privacy.delta", self.delta, 0, 1, ends="()")


def offer_sampling_rate(
    max_offers_per_round: int, min_available_es: int, targeted: bool = False
) -> float:
    """The most likely an ES is among a round's offers: ``max_offers / min_available`` (the
    sample is drawn from at least ``min_available_es`` connected ESs), at most 1; 1 when the
    offers are ``targeted`` (chosen by the ESs' public facts, not drawn)."""
    if max_offers_per_round < 1 or min_available_es < 1:
        raise ValueError(
            f"need >= 1 offer and >= 1 available ES, got {max_offers_per_round} and "
            f"{min_available_es}"
        )
    return 1.0 if targeted else min(1.0, max_offers_per_round / min_available_es)


def epsilon_spent(
    noise_multiplier: float,
    epoch_releases: Sequence[int],
    sampling_rate: float,
    delta: float,
    orders: Sequence[float] | None = None,
) -> float:
    """(epsilon, delta)-DP of a run whose contract epochs released ``epoch_releases`` modules
    each (see the module docstring); ``orders``: the RDP orders (``dp-accounting``'s default)."""
    import dp_accounting  # lazily: the config and the ES queries import this module
    from dp_accounting.rdp import RdpAccountant

    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
    accountant = RdpAccountant() if orders is None else RdpAccountant(list(orders))
    for releases in (r for r in epoch_releases if r > 0):
        epoch = dp_accounting.GaussianDpEvent(noise_multiplier / math.sqrt(releases))
        if sampling_rate < 1:
            epoch = dp_accounting.PoissonSampledDpEvent(sampling_rate, epoch)
        accountant.compose(epoch)
    return float(accountant.get_epsilon(delta))
