"""LoRA agent modules: exact adapter round trips, validation, training, aggregation, files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fed_agent.data import es_examples, heldout_examples
from fed_agent.evaluation.quality import evaluate_quality
from fed_agent.models.registry import load_base
from fed_agent.modules.adapter import AdapterError, AgentModule, load_adapter_file, save_adapter
from fed_agent.modules.training import train_locally
from fed_agent.screening.aggregation import weighted_average


def test_adapter_state_round_trips_exactly(smoke_module):
    state = {
        k: np.random.default_rng(0).normal(size=v.shape).astype(np.float32)
        for k, v in smoke_module.initial_state.items()
    }
    smoke_module.load_adapter(state)
    back = smoke_module.adapter_state()
    assert list(back) == list(state)
    assert all(np.array_equal(back[k], state[k]) for k in state)


def test_only_lora_tensors_travel_and_they_are_small(smoke_module):
    keys = smoke_module.adapter_keys
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
    assert smoke_module.adapter_bytes < 0.05 * smoke_module.base.num_bytes


def test_adapter_state_is_a_copy_not_a_view(smoke_module, smoke_cfg):
    before = smoke_module.adapter_state()
    examples = es_examples(smoke_cfg.data, smoke_cfg.seed, 0)
    train_locally(smoke_module, examples, smoke_cfg.training, 2, seed=0)
    after = smoke_module.adapter_state()
    assert any(not np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda s, k: s.__setitem__(k, np.full_like(s[k], np.nan)), "NaN or Inf"),
        (lambda s, k: s.__setitem__(k, np.zeros((3, 3), np.float32)), "shape"),
        (lambda s, k: s.pop(k), "missing"),
        (lambda s, k: s.__setitem__("extra.weight", np.zeros(2, np.float32)), "unexpected"),
    ],
)
def test_bad_adapter_is_refused_and_changes_nothing(smoke_module, corrupt, message):
    state = smoke_module.adapter_state()
    bad = dict(state)
    corrupt(bad, next(iter(bad)))
    with pytest.raises(AdapterError, match=message):
        smoke_module.load_adapter(bad)
    assert all(np.array_equal(smoke_module.adapter_state()[k], state[k]) for k in state)


def test_local_training_lowers_heldout_loss(smoke_module, smoke_cfg):
    heldout = heldout_examples(smoke_cfg.data, smoke_cfg.seed)
    before = evaluate_quality(smoke_module, heldout, 64)
    examples = es_examples(smoke_cfg.data, smoke_cfg.seed, 0)
    report = train_locally(smoke_module, examples, smoke_cfg.training, 15, seed=1)
    after = evaluate_quality(smoke_module, heldout, 64)
    assert report.steps == 15 and report.examples_seen == 15 * smoke_cfg.training.batch_size
    assert after.answer_loss < before.answer_loss - 0.1


def test_zero_steps_is_a_no_op(smoke_module, smoke_cfg):
    before = smoke_module.adapter_state()
    report = train_locally(
        smoke_module, es_examples(smoke_cfg.data, 0, 0), smoke_cfg.training, 0, seed=0
    )
    assert report.steps == 0 and np.isnan(report.mean_loss)
    assert all(np.array_equal(before[k], smoke_module.adapter_state()[k]) for k in before)


def test_weighted_average_matches_hand_computation():
    a = {"w": np.array([1.0, 2.0], np.float32)}
    b = {"w": np.array([3.0, 6.0], np.float32)}
    avg = weighted_average([a, b], [1, 3])
    assert np.allclose(avg["w"], [2.5, 5.0])
    with pytest.raises(ValueError, match="positive sum"):
        weighted_average([a, b], [0, 0])
    with pytest.raises(ValueError, match="different keys"):
        weighted_average([a, {"v": b["w"]}], [1, 1])


def test_adapter_file_round_trip_and_corrupt_file(tmp_path, smoke_module):
    path = tmp_path / "adapter.safetensors"
    state = smoke_module.adapter_state()
    save_adapter(state, path, {"round": "1"})
    loaded = load_adapter_file(path)
    assert all(np.array_equal(loaded[k], state[k]) for k in state)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(AdapterError, match="corrupt"):
        load_adapter_file(path)
    with pytest.raises(AdapterError, match="does not exist"):
        load_adapter_file(tmp_path / "missing.safetensors")


def test_a_lora_target_that_names_no_layer_is_refused_beside_good_ones(smoke_cfg):
    cfg = dataclasses.replace(smoke_cfg.model, lora_targets=["q_proj", "v_projj"])
    with pytest.raises(AdapterError) as err:
        AgentModule(load_base(cfg, smoke_cfg.seed), cfg, smoke_cfg.seed)
    assert str(err.value).startswith("model.lora_targets ['v_projj'] name no layer")
    assert "'q_proj'" in str(err.value)  # the layers that are there
