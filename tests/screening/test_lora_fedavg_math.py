"""FedAvg of LoRA factors from one shared module: how far it is from the mean update B @ A.

Every ES starts a round from the same global (A, B) and returns (A + dA_i, B + dB_i). Averaging
A and B separately gives mean(B_i) @ mean(A_i); the mean of the products is mean(B_i @ A_i).
They differ by exactly the weighted covariance of the updates, sum_i w_i (dB_i - dB)(dA_i - dA),
a second-order term: halving every update quarters the gap. This is why the default keeps plain
FedAvg of A and B (docs/models.md, "Why the default learns the rule").
"""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.screening.aggregation import server_step, weighted_average

A, B = "layer.lora_A.weight", "layer.lora_B.weight"


def round_states(rng, scale: float, num_es: int = 4, r: int = 4, d_in: int = 12, d_out: int = 10):
    """A shared global (A, B) and ``num_es`` replies that moved it by ``scale``-sized steps."""
    a0 = rng.normal(size=(r, d_in))
    b0 = rng.normal(size=(d_out, r))
    da = rng.normal(size=(num_es, r, d_in))
    db = rng.normal(size=(num_es, d_out, r))
    states = [
        {A: (a0 + scale * da[i]).astype(np.float32), B: (b0 + scale * db[i]).astype(np.float32)}
        for i in range(num_es)
    ]
    return states, scale * da, scale * db


def product_gap(states, weights) -> np.ndarray:
    """(mean B)(mean A) - mean(B A), in float64."""
    w = np.asarray(weights, float) / sum(weights)
    merged = weighted_average(states, weights)
    exact = sum(
        wi * s[B].astype(float) @ s[A].astype(float) for wi, s in zip(w, states, strict=True)
    )
    return merged[B].astype(float) @ merged[A].astype(float) - exact


def test_the_gap_is_minus_the_weighted_covariance_of_the_updates():
    states, da, db = round_states(np.random.default_rng(0), scale=0.1)
    weights = [1.0, 2.0, 3.0, 4.0]
    w = np.asarray(weights) / sum(weights)
    mean_da = np.tensordot(w, da, axes=1)
    mean_db = np.tensordot(w, db, axes=1)
    covariance = sum(wi * (db[i] - mean_db) @ (da[i] - mean_da) for i, wi in enumerate(w))
    np.testing.assert_allclose(product_gap(states, weights), -covariance, atol=1e-5)


def test_the_gap_is_second_order_in_the_update_size():
    gaps = [
        np.linalg.norm(product_gap(round_states(np.random.default_rng(1), s)[0], [1, 1, 1, 1]))
        for s in (0.2, 0.1)
    ]
    assert gaps[0] / gaps[1] == pytest.approx(4.0, rel=0.05)


def test_identical_updates_average_exactly():
    states, _, _ = round_states(np.random.default_rng(2), scale=0.1, num_es=1)
    copies = [states[0]] * 3
    assert np.abs(product_gap(copies, [1, 2, 3])).max() < 1e-5


def test_the_server_learning_rate_scales_the_averaged_step_and_1_is_fedavg() -> None:
    rng = np.random.default_rng(4)
    states, da, db = round_states(rng, scale=0.1)
    global_state = {A: states[0][A] - 0.1 * da[0], B: states[0][B] - 0.1 * db[0]}
    global_state = {k: v.astype(np.float32) for k, v in global_state.items()}
    averaged = weighted_average(states, [1.0] * len(states))
    assert server_step(global_state, averaged, 1.0) is averaged
    stepped = server_step(global_state, averaged, 1.5)
    for key in (A, B):
        step = averaged[key].astype(np.float64) - global_state[key]
        np.testing.assert_allclose(stepped[key], global_state[key] + 1.5 * step, atol=1e-6)
        assert stepped[key].dtype == np.float32
    with pytest.raises(ValueError, match="different keys"):
        server_step({A: global_state[A]}, averaged, 1.5)
