"""The privacy budget of central DP: dp-accounting's published values, epochs, sampling."""

from __future__ import annotations

import math

import pytest

from fed_agent.privacy import PrivacyConfig, epsilon_spent, offer_sampling_rate


def test_one_gaussian_release_matches_dp_accountings_published_value():
    # dp_accounting's rdp_privacy_accountant_test.test_compute_epsilon_delta_gaussian: noise
    # multiplier 4.530877117 gives exactly (1, 1e-6)-DP over orders 1.0, 1.001, ..., 99.999
    orders = [0.001 * i for i in range(1000, 100000)]
    assert epsilon_spent(4.530877117, [1], 1.0, 1e-6, orders) == pytest.approx(1.0, abs=1e-7)


def test_poisson_sampled_releases_match_dp_accountings_published_rdp():
    # test_compute_rdp_poisson_sampled_gaussian: z = 2.5, q = 0.01, 50 steps; its RDP at
    # these orders, turned into epsilon with the library's conversion (Canonne et al. 2020)
    orders = [1.5, 2.5, 5, 50, 100]
    rdp = [6.70579741e-04, 1.08548710e-03, 2.18075656e-03, 2.38460375e-02, 1.67416308e02]
    delta = 1e-5
    by_hand = min(
        r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
        for a, r in zip(orders, rdp, strict=True)
    )
    assert epsilon_spent(2.5, [1] * 50, 0.01, delta, orders) == pytest.approx(by_hand, rel=1e-4)


def test_without_sampling_the_epochs_do_not_change_the_budget():
    # q = 1: 5 rounds spent as epochs of 2, 2 and 1 releases or as 5 single releases
    grouped = epsilon_spent(1.0, [2, 2, 1], 1.0, 1e-5)
    assert grouped == pytest.approx(epsilon_spent(1.0, [1] * 5, 1.0, 1e-5), rel=1e-9)
    assert grouped == pytest.approx(12.3017, abs=1e-3)  # the hand-written bound said 13.256


def test_budget_grows_with_releases_and_shrinks_with_noise_and_sampling():
    assert epsilon_spent(1.0, [1] * 10, 1.0, 1e-5) > epsilon_spent(1.0, [1] * 5, 1.0, 1e-5)
    assert epsilon_spent(2.0, [1] * 10, 1.0, 1e-5) < epsilon_spent(1.0, [1] * 10, 1.0, 1e-5)
    assert epsilon_spent(1.0, [2] * 5, 0.3, 1e-5) < epsilon_spent(1.0, [2] * 5, 1.0, 1e-5)
    assert epsilon_spent(1.0, [], 1.0, 1e-5) == 0.0
    assert epsilon_spent(1.0, [0, 0], 0.5, 1e-5) == 0.0


def test_the_sampling_rate_is_the_offer_share_of_the_fewest_connected_esses():
    assert offer_sampling_rate(3, 12) == 0.25
    assert offer_sampling_rate(100, 2) == 1.0
    with pytest.raises(ValueError, match="available ES"):
        offer_sampling_rate(3, 0)
    with pytest.raises(ValueError, match="sampling_rate"):
        epsilon_spent(1.0, [1], 0.0, 1e-5)


def test_invalid_privacy_settings_are_refused():
    with pytest.raises(ValueError, match="noise_multiplier"):
        PrivacyConfig(noise_multiplier=0)
    with pytest.raises(ValueError, match="delta"):
        PrivacyConfig(delta=2)
