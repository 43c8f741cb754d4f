"""Attack generators: turn an honest ES reply into a malicious or broken one (no flwr).

Used by the robustness benchmark and the validation tests. Each attack takes the honest
adapter state an ES trained, the global state it received and its honest reply metrics, and
returns what a malicious ES would send instead. Malformed attacks (nan, inf, wrong_shape,
missing_key, extra_key, fraud_count, oversized) must be rejected by reply validation;
value attacks (stale, sign_flip, scale, noise) pass validation and must be caught by update
screening or bounded by robust aggregation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from fed_agent.choices import check_choice
from fed_agent.protocol import AdapterState

Metrics = dict[str, float | int]

MALFORMED_ATTACKS = (
    "nan",
    "inf",
    "wrong_shape",
    "missing_key",
    "extra_key",
    "fraud_count",
    "oversized",
)
VALUE_ATTACKS = ("stale", "sign_flip", "scale", "noise")
ATTACKS = (*MALFORMED_ATTACKS, *VALUE_ATTACKS)


@dataclass(frozen=True)
class AttackParams:
    """Strengths of the attacks."""

    sign_flip_factor: float = 4.0
    """Sent update = -factor x honest update (a -4x flip cancels 4 honest ESs under FedAvg)."""
    scale_factor: float = 10.0
    """Sent update = factor x honest update (boosting / model replacement)."""
    noise_factor: float = 3.0
    """Sent update = Gaussian noise with factor x the honest update's RMS per coordinate."""
    fraud_examples: int = 10**9
    """Claimed example count of a weight-fraud attack (takes ~all FedAvg weight if accepted)."""
    oversize_factor: int = 50
    """An oversized reply pads the adapter with this many adapters' worth of float32 zeros."""


def _update(honest: Mapping[str, np.ndarray], global_state: Mapping[str, np.ndarray], k: str):
    return np.asarray(honest[k], np.float32) - np.asarray(global_state[k], np.float32)


def _with_update(global_state, honest, transform) -> AdapterState:
    return {
        k: (
            np.asarray(global_state[k], np.float32) + transform(_update(honest, global_state, k))
        ).astype(np.float32)
        for k in honest
    }


def _poison_first(honest: Mapping[str, np.ndarray], value: float) -> AdapterState:
    state = {k: np.array(v, np.float32) for k, v in honest.items()}
    first = next(iter(state))
    state[first].flat[0] = value
    return state


def _wrong_shape(honest: Mapping[str, np.ndarray]) -> AdapterState:
    """The first tensor transposed (a non-square LoRA A/B), else with one extra row."""
    state = {k: np.array(v, np.float32) for k, v in honest.items()}
    first = next(iter(state))
    value = state[first]
    if value.ndim == 2 and value.shape[0] != value.shape[1]:
        state[first] = np.ascontiguousarray(value.T)
    else:
        state[first] = np.concatenate([value, value[:1]], axis=0)
    return state


def apply_attack(
    name: str,
    honest: Mapping[str, np.ndarray],
    global_state: Mapping[str, np.ndarray],
    metrics: Mapping[str, float | int],
    rng: np.random.Generator,
    params: AttackParams = AttackParams(),
) -> tuple[AdapterState, Metrics]:
    """What an attacker sends instead of its honest ``(adapter, metrics)`` reply.

    Parameters
    ----------
    name
        One of :data:`ATTACKS`.
    honest
        The adapter state the ES actually trained.
    global_state
        The global adapter state of the round (the update is ``honest - global_state``).
    metrics
        The honest reply metrics (keys of ``fed_agent.protocol.REPLY_METRIC_KEYS``).
    rng
        Randomness of the noise attack.
    params
        Attack strengths.

    Returns
    -------
    tuple
        The adapter state and metrics to send (fresh objects; the inputs are not changed).
    """
    check_choice("attack", name, ATTACKS)
    sent_metrics: Metrics = dict(metrics)
    build: dict[str, Callable[[], AdapterState]] = {
        "nan": lambda: _poison_first(honest, np.nan),
        "inf": lambda: _poison_first(honest, np.inf),
        "wrong_shape": lambda: _wrong_shape(honest),
        "missing_key": lambda: {k: np.array(v) for k, v in list(honest.items())[1:]},
        "extra_key": lambda: {
            **{k: np.array(v) for k, v in honest.items()},
            "extra.lora_C.weight": np.zeros((2, 2), np.float32),
        },
        "fraud_count": lambda: {k: np.array(v) for k, v in honest.items()},
        "oversized": lambda: {
            **{k: np.array(v) for k, v in honest.items()},
            "padding": np.zeros(
                params.oversize_factor * sum(np.size(v) for v in honest.values()), np.float32
            ),
        },
        "stale": lambda: {k: np.array(v, np.float32) for k, v in global_state.items()},
        "sign_flip": lambda: _with_update(
            global_state, honest, lambda d: -params.sign_flip_factor * d
        ),
        "scale": lambda: _with_update(global_state, honest, lambda d: params.scale_factor * d),
        "noise": lambda: _with_update(
            global_state,
            honest,
            lambda d: rng.normal(
                0.0, params.noise_factor * float(np.sqrt(np.mean(d**2))) + 1e-8, d.shape
            ),
        ),
    }
    if name == "fraud_count":
        sent_metrics["num-examples"] = params.fraud_examples
    return build[name](), sent_metrics


# ---------------------------------------------------------------- attacks that see more


COORDINATED_ATTACKS = ("collude", "hug", "peer_copy", "scaled_copy")
"""Attacks built from more than the attacker's own update (all attackers' honest updates, or
an honest peer's): ``collude``: every attacker sends one shared update that hugs the limits;
``hug``: each attacker alone sends an update just inside the limits, mostly a junk direction;
``peer_copy``: a copy of an honest peer's update; ``scaled_copy``: 0.15x of it."""

PEER_ATTACKS = ("near_copy_99", "near_copy_95", "peer_mean", "peer_extrapolation")
PEER_ATTACKS += ("collude_noisy",)
"""Attacks built from the honest peers' updates: ``near_copy_<c>``: a peer's update with noise
added, at cosine 0.<c> to it and of its norm; ``peer_mean``: the mean of two peers' updates;
``peer_extrapolation``: ``2p - q`` for two peers ``p``, ``q`` (``p`` is then their mean);
``collude_noisy``: like ``hug``, but the junk is one direction all attackers share plus 0.6 of
each one's own noise (so that no two replies are copies of each other)."""


@dataclass(frozen=True)
class HugParams:
    """How a threshold-hugging attacker sits inside the limits it knows (the defaults of
    ``fed_agent.screening.config.ScreeningConfig`` plus a margin). It does not know the
    cloud's reference update and uses its own honest update in its place."""

    cosine: float = 0.4
    """Cosine of the sent update to the attacker's own honest update: its cosine to the reference
    is about this x its honest update's, which must pass ``cosine_fraction`` (0.3) x the
    round's median honest cosine."""
    norm_ratio: float = 1.9
    """Norm of the sent update over the attacker's own honest update's (limit 2x)."""
    copy_factor: float = 0.15
    """``scaled_copy`` sends this x a peer's update."""


def _hugging(honest_delta: np.ndarray, junk: np.ndarray, params: HugParams) -> np.ndarray:
    """A vector at ``params.cosine`` to ``honest_delta``, ``norm_ratio`` x its norm, the rest
    along the part of ``junk`` orthogonal to it."""
    unit = honest_delta / np.linalg.norm(honest_delta)
    side = junk - (junk @ unit) * unit
    side /= np.linalg.norm(side)
    c = params.cosine
    return params.norm_ratio * np.linalg.norm(honest_delta) * (c * unit + np.sqrt(1 - c**2) * side)


def coordinated_deltas(
    name: str,
    attacker_deltas: list[np.ndarray],
    peer_delta: np.ndarray,
    rng: np.random.Generator,
    params: HugParams = HugParams(),
) -> list[np.ndarray]:
    """What each attacker sends instead of its honest update (flattened deltas from the
    global module), given every attacker's honest update and one honest peer's."""
    check_choice("coordinated attack", name, COORDINATED_ATTACKS)
    junk = rng.normal(size=peer_delta.shape)  # one junk direction the attackers agree on
    if name == "collude":
        shared = _hugging(np.mean(attacker_deltas, axis=0), junk, params)
        return [shared.copy() for _ in attacker_deltas]
    if name == "hug":
        return [_hugging(d, junk, params) for d in attacker_deltas]
    if name == "peer_copy":
        return [peer_delta.copy() for _ in attacker_deltas]
    if name == "scaled_copy":
        return [params.copy_factor * peer_delta for _ in attacker_deltas]
    raise AssertionError("unreachable: check_choice covers every attack")


def _near(peer: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """``peer`` turned by Gaussian noise to ``cosine`` to it, at its norm."""
    unit = peer / np.linalg.norm(peer)
    side = rng.normal(size=peer.shape)
    side -= (side @ unit) * unit
    side /= np.linalg.norm(side)
    return np.linalg.norm(peer) * (cosine * unit + np.sqrt(1 - cosine**2) * side)


def peer_deltas(
    name: str,
    attacker_deltas: list[np.ndarray],
    peer_deltas_: list[np.ndarray],
    rng: np.random.Generator,
    params: HugParams = HugParams(),
) -> list[np.ndarray]:
    """What each attacker sends (one of :data:`PEER_ATTACKS`), given every attacker's honest
    update and the honest peers' updates (flattened deltas; attacker ``i`` copies peer
    ``i mod len(peers)``, or averages that peer and the next)."""
    check_choice("peer attack", name, PEER_ATTACKS)
    n = len(peer_deltas_)
    if n < 2:
        raise ValueError(f"{name} needs at least 2 honest peers, got {n}")
    if name.startswith("near_copy_"):
        cosine = float(name.rsplit("_", 1)[1]) / 100
        return [_near(peer_deltas_[i % n], cosine, rng) for i in range(len(attacker_deltas))]
    if name == "peer_mean":
        return [
            (peer_deltas_[i % n] + peer_deltas_[(i + 1) % n]) / 2
            for i in range(len(attacker_deltas))
        ]
    if name == "peer_extrapolation":
        return [
            2 * peer_deltas_[i % n] - peer_deltas_[(i + 1) % n] for i in range(len(attacker_deltas))
        ]
    if name == "collude_noisy":
        junk = rng.normal(size=peer_deltas_[0].shape)
        junk /= np.linalg.norm(junk)
        sent = []
        for own in attacker_deltas:
            noise = rng.normal(size=own.shape)
            side = 0.8 * junk + 0.6 * noise / np.linalg.norm(noise)
            sent.append(_hugging(own, side, params))
        return sent
    raise AssertionError("unreachable: check_choice covers every attack")
