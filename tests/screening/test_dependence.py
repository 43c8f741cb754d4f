"""Copies, means of peers and near-copies are worth what they add, whatever the order of
arrival: a near-copy's original and the peers of a mean hold the worth, exact copies share
it; honest updates as close to each other as measured share nothing.

Synthetic updates (pure numpy) shaped like the smoke model's round 1: honest ESs share one
learning direction plus their own data's part, which lies in a few directions that the ESs'
data have in common (so the difference of two honest updates is learning the others share in
part), plus a little of their own.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fed_agent.screening.config import ScreeningConfig
from fed_agent.screening.dependence import (
    _rank,
    dependence_shares,
    dependent_groups,
    explained_shares,
    near_copy_classes,
    noise_share_limit,
    unit_rows,
)

DIM = 1792  # the smoke model's LoRA parameters
CFG = ScreeningConfig()
_RNG = np.random.default_rng(0)
COMMON = _RNG.normal(size=DIM)
TOPICS = _RNG.normal(size=(6, DIM))  # the directions the ESs' data have in common


def honest(seed: int, own: float = 0.25) -> np.ndarray:
    """The common direction plus ``own`` x a mix of the topics plus 2 % of the ES's own noise."""
    rng = np.random.default_rng(seed)
    part = rng.normal(size=6) @ TOPICS / np.sqrt(6)
    return COMMON + own * part + 0.02 * rng.normal(size=DIM)


def honest_round(n: int = 8) -> list[np.ndarray]:
    return [honest(s) for s in range(1, n + 1)]


def near_copy(peer: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """``peer`` turned by Gaussian noise to ``cosine`` to it, at its norm (as
    ``benchmarks.attacks``' ``near_copy_*``)."""
    unit = peer / np.linalg.norm(peer)
    side = np.random.default_rng(seed).normal(size=DIM)
    side -= (side @ unit) * unit
    side /= np.linalg.norm(side)
    return np.linalg.norm(peer) * (cosine * unit + np.sqrt(1 - cosine**2) * side)


def test_honest_updates_as_close_as_measured_share_nothing():
    updates = honest_round(12)
    units = unit_rows(updates)
    closest = max(units[i] @ units[j] for i, j in itertools.combinations(range(12), 2))
    assert 0.95 < closest < 0.995  # honest smoke-model pairs measured up to 0.99
    assert dependent_groups(units, CFG.dependence_tolerance) == []
    assert near_copy_classes(units, CFG) == [[i] for i in range(12)]
    limit = noise_share_limit(10, DIM, CFG.near_copy_sigmas)
    shares = explained_shares(units, CFG.dependence_tolerance, CFG.near_copy_cosine)
    assert len(shares) == 54 and min(shares.values()) > 3 * limit  # 54 of 66 pairs at >= 0.9
    np.testing.assert_array_equal(dependence_shares(updates, CFG), np.ones(12))


def test_the_noise_limit_is_the_random_share_plus_six_deviations():
    # 18 others in the smoke model's 1,792 dimensions; 2 in the default model's 155,648
    assert noise_share_limit(18, 1792, 6.0) == pytest.approx(0.0301, abs=2e-4)
    assert noise_share_limit(2, 155_648, 6.0) == pytest.approx(9.0e-5, abs=2e-6)
    shares = []
    for seed in range(200):  # what others explain of a random direction stays under it
        units = unit_rows([*honest_round(6), np.random.default_rng(seed + 50).normal(size=DIM)])
        rest = units[:6]
        residual = units[6] - rest.T @ np.linalg.lstsq(rest.T, units[6], rcond=None)[0]
        shares.append(1 - residual @ residual)
    assert max(shares) < noise_share_limit(6, DIM, 6.0)


@pytest.mark.parametrize("cosine", [0.998, 0.99, 0.95, 0.91])
def test_the_original_of_a_near_copy_holds_its_update_in_any_order(cosine):
    updates = honest_round(11)
    sent = [*updates, near_copy(updates[2], cosine, seed=11)]
    base = dependence_shares(sent, CFG)
    np.testing.assert_allclose(base, [1] * 11 + [0])
    rng = np.random.default_rng(5)
    for _ in range(25):
        order = rng.permutation(12)
        shares = dependence_shares([sent[i] for i in order], CFG)
        np.testing.assert_allclose(shares, base[order])


def test_near_copies_of_several_peers_pair_with_their_originals_only():
    updates = honest_round(11)
    copies = [near_copy(updates[i], 0.95, seed=20 + i) for i in range(9)]  # 45 % attackers
    shares = dependence_shares([*updates, *copies], CFG)
    np.testing.assert_allclose(shares, [1] * 11 + [0] * 9)


def test_two_near_copies_of_one_peer_leave_it_its_update():
    updates = honest_round(10)
    sent = [*updates, near_copy(updates[0], 0.99, 1), near_copy(updates[0], 0.95, 2)]
    np.testing.assert_allclose(dependence_shares(sent, CFG), [1] * 10 + [0, 0])


def test_a_copy_has_more_unexplained_and_no_more_explained_than_its_original():
    """The noise the copier adds is what the others do not explain."""
    updates = honest_round(11)
    copy = near_copy(updates[2], 0.95, seed=11)
    rest = np.delete(np.stack(updates), 2, axis=0)
    parts = []
    for x in (updates[2], copy):
        explained = rest.T @ np.linalg.lstsq(rest.T, x, rcond=None)[0]
        parts.append((np.linalg.norm(x - explained), np.linalg.norm(explained)))
    (a_original, b_original), (a_copy, b_copy) = parts
    assert a_copy > 1.5 * a_original and b_copy < b_original


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.1])
@pytest.mark.parametrize("shift", [0.0, 0.01, 0.02, 0.04])
def test_a_copier_cannot_buy_the_original_s_place(scale, shift):
    """Scaled down (less unexplained, but less explained too) or pushed along the direction
    every ES shares (more explained, as much unexplained): the original keeps at least half,
    the copier gets at most half (or, pushed far enough, is no near-copy at all)."""
    updates = honest_round(19)
    shared = np.mean(updates, axis=0)
    for seed in range(3):
        original = updates[seed]
        copy = scale * near_copy(original, 0.99, seed=40 + seed)
        copy += shift * np.linalg.norm(original) * shared / np.linalg.norm(shared)
        shares = dependence_shares([*updates, copy], CFG)
        assert shares[seed] >= 0.5
        if shares[seed] < 1 or shares[-1] < 1:  # found as a near-copy
            assert shares[-1] <= 0.5


def test_an_original_without_a_clear_lead_shares_its_update_equally():
    """A lead within ``origin_sigmas`` deviations of chance singles no one out."""
    updates = honest_round(11)
    strict = ScreeningConfig(origin_sigmas=40.0)  # the largest setting: this lead is not enough
    sent = [*updates, near_copy(updates[2], 0.99, seed=11)]
    np.testing.assert_allclose(dependence_shares(sent, strict), [1, 1, 0.5] + [1] * 8 + [0.5])
    np.testing.assert_allclose(dependence_shares(sent, CFG), [1] * 11 + [0])  # 4 deviations


def test_small_rounds_are_not_searched_for_near_copies():
    """With few others an honest pair's difference is no better explained than noise."""
    updates = honest_round(7)
    sent = [*updates, near_copy(updates[2], 0.95, seed=11)]
    np.testing.assert_array_equal(dependence_shares(sent, CFG), np.ones(8))
    fewer = ScreeningConfig(near_copy_min_updates=8)
    np.testing.assert_allclose(dependence_shares(sent, fewer), [1] * 7 + [0])


def test_a_round_of_four_of_a_large_module_is_searched_for_near_copies():
    """In D = 155,648 dimensions (the default module) two others explain 0.0001 of noise
    (the limit) and far more of an honest pair's difference: rounds of 3 or more are searched
    (``screening.near_copy_max_noise_share``); in the smoke model's 1,792 they are not."""
    dim = 155_648
    rng = np.random.default_rng(5)
    common, topics = rng.normal(size=dim), rng.normal(size=(6, dim))
    honest_large = [
        common + 0.2 * (r.normal(size=6) @ topics) / np.sqrt(6) + 0.02 * r.normal(size=dim)
        for r in (np.random.default_rng(s) for s in range(1, 5))
    ]
    units = unit_rows(honest_large)
    assert min(units[i] @ units[j] for i, j in itertools.combinations(range(4), 2)) > 0.9
    assert noise_share_limit(2, dim, CFG.near_copy_sigmas) < CFG.near_copy_max_noise_share
    np.testing.assert_array_equal(dependence_shares(honest_large, CFG), np.ones(4))
    for source, cosine in ((0, 0.99), (2, 0.95)):
        unit = honest_large[source] / np.linalg.norm(honest_large[source])
        side = rng.normal(size=dim)
        side -= (side @ unit) * unit
        copy = np.linalg.norm(honest_large[source]) * (
            cosine * unit + np.sqrt(1 - cosine**2) * side / np.linalg.norm(side)
        )
        for sent, copied in (([*honest_large[:3], copy], 3), ([copy, *honest_large[:3]], 0)):
            expected = np.ones(4)
            expected[copied] = 0.0  # unpaid in either order; its original paid in full
            np.testing.assert_allclose(dependence_shares(sent, CFG), expected)
    small = [u[:DIM] for u in honest_large[:3]]  # a round of 4 of the smoke model's size
    copy_small = near_copy(small[0], 0.95, seed=3)
    np.testing.assert_array_equal(dependence_shares([*small, copy_small], CFG), np.ones(4))


def test_shares_do_not_depend_on_the_order_of_arrival():
    updates = honest_round(6)
    sent = [*updates, (updates[0] + updates[1]) / 2, updates[3].copy(), updates[3].copy()]
    base = dependence_shares(sent, CFG)
    for order in itertools.islice(itertools.permutations(range(len(sent))), 0, 200, 7):
        shares = dependence_shares([sent[i] for i in order], CFG)
        np.testing.assert_allclose(shares, base[list(order)])
    # the mean of two peers: the peers hold the rank 2; three copies of one: rank 1, shared
    np.testing.assert_allclose(base, [1, 1, 1, 1 / 3, 1, 1, 0, 1 / 3, 1 / 3])


def test_means_of_peers_are_worth_nothing_and_their_peers_in_full():
    """A chain of means (the benchmark's 45 %): each mean lies in the cone of its two peers,
    no peer in the cone of the others; the peers share the group's rank."""
    updates = honest_round(11)
    means = [(updates[i] + updates[i + 1]) / 2 for i in range(9)]
    shares = dependence_shares([*updates, *means], CFG)
    assert np.all(shares[11:] == 0)
    units = unit_rows([*updates, *means])
    (group,) = dependent_groups(units, CFG.dependence_tolerance)
    rank = _rank(units[group], CFG.dependence_tolerance)
    np.testing.assert_allclose(shares[:11], min(1.0, rank / 11))  # synthetic ESs: rank 9


def test_a_mean_with_a_little_noise_of_its_own_is_still_inside():
    a, b, c = honest(1), honest(2), honest(3)
    mean = (a + b) / 2
    side = np.random.default_rng(8).normal(size=DIM)
    side -= np.linalg.lstsq(np.stack([a, b]).T, side, rcond=None)[0] @ np.stack([a, b])
    noisy = mean + 0.02 * np.linalg.norm(mean) * side / np.linalg.norm(side)
    for sent in ([a, b, c, mean], [a, b, c, noisy], [noisy, c, b, a]):
        shares = dependence_shares(sent, CFG)
        np.testing.assert_allclose(sorted(shares), [0, 1, 1, 1])
        assert shares[[i for i, x in enumerate(sent) if x is noisy or x is mean][0]] == 0


def test_colluders_sending_one_update_are_worth_one_update_in_all():
    updates = honest_round(5)
    shared = honest(99)
    shares = dependence_shares([*updates, shared, 0.9 * shared, shared], CFG)
    np.testing.assert_allclose(shares, [1] * 5 + [1 / 3] * 3)


def test_pairs_alone_are_never_near_copies():
    """Two updates leave nothing to tell learning from noise: only exact copies share."""
    a, b = honest(1), near_copy(honest(1), 0.95, 3)
    np.testing.assert_array_equal(dependence_shares([a, b], CFG), [1, 1])
    np.testing.assert_array_equal(dependence_shares([a, 2 * a], CFG), [0.5, 0.5])


def test_bad_input_is_refused_with_one_line():
    with pytest.raises(ValueError, match="finite and non-zero"):
        dependence_shares([honest(1), np.zeros(DIM)], CFG)
    with pytest.raises(ValueError, match="near_copy_sigmas"):
        ScreeningConfig(near_copy_sigmas=-1.0)
    with pytest.raises(ValueError, match="origin_sigmas"):
        ScreeningConfig(origin_sigmas=float("nan"))
    with pytest.raises(ValueError, match=r"near_copy_sigmas must be a finite number in \[0, 40\]"):
        ScreeningConfig(near_copy_sigmas=1e308)
    with pytest.raises(ValueError, match="mean_support_cosine"):
        ScreeningConfig(mean_support_cosine=float("inf"))


def test_a_copy_among_three_is_one_update_not_a_near_copy_of_the_third():
    """A copy leaves the near-copy test nothing to compare with: it is taken as one update."""
    a, b = honest(1), honest(2)
    np.testing.assert_allclose(dependence_shares([a, b, 1.3 * a], CFG), [0.5, 1, 0.5])
    np.testing.assert_allclose(dependence_shares([1.3 * a, b, a], CFG), [0.5, 1, 0.5])


def test_a_junk_update_is_no_near_copy_of_the_honest_ones():
    """Its difference from any honest update is junk too; it must not pull them together."""
    updates = honest_round(10)
    own = honest(50)
    junk = np.random.default_rng(4).normal(size=DIM)
    junk -= (junk @ own) / (own @ own) * own
    hug = 0.4 * own / np.linalg.norm(own) + np.sqrt(1 - 0.4**2) * junk / np.linalg.norm(junk)
    shares = dependence_shares([*updates, hug, hug.copy()], CFG)
    np.testing.assert_allclose(shares, [1] * 10 + [0.5, 0.5])


def test_an_exact_copy_shares_with_its_original_and_a_near_copy_gets_nothing():
    updates = honest_round(11)
    sent = [*updates, 1.3 * updates[2], near_copy(updates[2], 0.95, seed=4)]
    expected = np.array([1, 1, 0.5] + [1] * 8 + [0.5, 0])
    for order in (range(13), range(12, -1, -1)):
        order = list(order)
        shares = dependence_shares([sent[i] for i in order], CFG)
        np.testing.assert_allclose(shares, expected[order])


def test_an_extrapolation_cannot_frame_an_honest_peer_as_the_mean():
    """``2p - q`` makes the honest ``p`` the mean of the attacker and ``q``; its own part
    points away from ``q``'s, so the cone is not believed and the three share the rank."""
    updates = honest_round(11)
    framing = 2 * updates[0] - updates[1]
    shares = dependence_shares([*updates, framing], CFG)
    np.testing.assert_allclose(shares, [2 / 3, 2 / 3] + [1] * 9 + [2 / 3])
    mean = (updates[0] + updates[1]) / 2
    np.testing.assert_allclose(dependence_shares([*updates, mean], CFG), [1] * 11 + [0])
