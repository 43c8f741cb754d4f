"""The privacy budget of central DP: monotone in rounds and noise, matches the RDP bound."""

from __future__ import annotations

import math

import pytest

from fed_agent.privacy import PrivacyConfig, gaussian_epsilon


def test_epsilon_matches_the_rdp_bound_at_the_best_order():
    # z = 1, 1 round, delta = 1e-5: min over orders of a/2 + ln(1e5)/(a-1); a = 5 is in the grid
    expected = min(a / 2 + math.log(1e5) / (a - 1) for a in (4.0, 5.0, 6.0))
    assert gaussian_epsilon(1.0, 1, 1e-5) == pytest.approx(expected)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    assert gaussian_epsilon(1.0, 10, 1e-5) > gaussian_epsilon(1.0, 5, 1e-5)
    assert gaussian_epsilon(2.0, 10, 1e-5) < gaussian_epsilon(1.0, 10, 1e-5)
    assert gaussian_epsilon(1.0, 0, 1e-5) == 0.0


def test_invalid_privacy_settings_are_refused():
    with pytest.raises(ValueError, match="noise_multiplier"):
        PrivacyConfig(noise_multiplier=0)
    with pytest.raises(ValueError, match="delta"):
        PrivacyConfig(delta=2)
