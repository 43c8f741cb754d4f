"""FFA-LoRA (frozen A) makes FedAvg of LoRA exact; plain FedAvg of A and B is not."""

from __future__ import annotations

import dataclasses

import numpy as np

from fed_agent.data import es_examples
from fed_agent.modules.adapter import agent_module
from fed_agent.modules.training import train_locally
from fed_agent.screening.aggregation import weighted_average


def two_es_updates(cfg, freeze_a: bool):
    model_cfg = dataclasses.replace(cfg.model, lora_freeze_a=freeze_a)
    module = agent_module(model_cfg, cfg.seed)
    states = []
    for pid in (0, 1):
        module.reset()
        train_locally(module, es_examples(cfg.data, cfg.seed, pid), cfg.training, 3, seed=pid)
        states.append(module.adapter_state())
    module.reset()
    return module, states


def product_error(states, weights, layer):
    """Relative error of (mean B)(mean A) against mean(B A) for one LoRA layer."""
    a_key, b_key = f"{layer}.lora_A.weight", f"{layer}.lora_B.weight"
    w = np.asarray(weights, float) / sum(weights)
    exact = sum(
        wi * s[b_key].astype(float) @ s[a_key].astype(float)
        for wi, s in zip(w, states, strict=True)
    )
    merged = weighted_average(states, weights)
    approx = merged[b_key].astype(float) @ merged[a_key].astype(float)
    return np.linalg.norm(approx - exact) / np.linalg.norm(exact)


def test_frozen_a_stays_at_its_shared_init_and_averaging_is_exact(smoke_cfg):
    module, states = two_es_updates(smoke_cfg, freeze_a=True)
    a_keys = [k for k in module.initial_state if "lora_A" in k]
    assert all(np.array_equal(s[k], module.initial_state[k]) for s in states for k in a_keys)
    layer = a_keys[0].removesuffix(".lora_A.weight")
    assert product_error(states, [1, 3], layer) < 1e-5


def test_plain_fedavg_of_a_and_b_is_not_the_mean_update(smoke_cfg):
    module, states = two_es_updates(smoke_cfg, freeze_a=False)
    layer = next(k for k in module.initial_state if "lora_A" in k).removesuffix(".lora_A.weight")
    assert product_error(states, [1, 3], layer) > 1e-3
