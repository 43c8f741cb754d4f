"""Synthetic scenes: deterministic, labelled by the documented rule, non-IID across ESs."""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.config.schema import DataConfig
from fed_agent.data import es_examples, heldout_examples, kind_mixture
from fed_agent.data.render import describe, perception_log, render_image
from fed_agent.data.scenes import Scene, SceneObject, decide_action, sample_scene


def scene(*objects, weather="clear", light="day"):
    return Scene("urban_crossing", weather, light, tuple(SceneObject(*o) for o in objects))


@pytest.mark.parametrize(
    ("objects", "weather", "light", "expected"),
    [
        ([("pedestrian", "crosswalk", "near", "crossing")], "clear", "day", "stop"),
        ([("pedestrian", "crosswalk", "far", "crossing")], "clear", "day", "go"),
        ([("dog", "ahead", "mid", "approaching")], "clear", "day", "stop"),
        ([("dog", "left", "near", "approaching")], "clear", "day", "slow"),
        ([("debris", "ahead", "near", "stationary")], "clear", "day", "stop"),
        ([("truck", "ahead", "near", "receding")], "clear", "day", "slow"),
        ([("cone", "crosswalk", "far", "stationary")], "clear", "day", "slow"),
        ([("car", "right", "near", "approaching")], "clear", "day", "go"),
        ([("car", "right", "near", "approaching")], "fog", "day", "slow"),
        ([("car", "right", "far", "receding")], "rain", "night", "slow"),
        ([("car", "right", "far", "receding")], "rain", "day", "go"),
    ],
)
def test_decision_rule(objects, weather, light, expected):
    assert decide_action(scene(*objects, weather=weather, light=light)) == expected


def test_renderings_name_every_object():
    s = scene(("cyclist", "left", "mid", "receding"), ("bus", "ahead", "far", "stationary"))
    assert perception_log(s) == (
        "weather=clear light=day | cyclist left mid receding ; bus ahead far stationary"
    )
    assert describe(s) == (
        "By day in clear weather: a cyclist on the left a short way off, moving away; "
        "a bus ahead in the distance, standing still."
    )


def test_image_is_normalised_and_encodes_objects():
    rng = np.random.default_rng(0)
    empty = render_image(scene(), 32, rng)
    with_car = render_image(scene(("car", "ahead", "near", "stationary")), 32, rng)
    assert empty.shape == (3, 32, 32) and empty.dtype == np.float32
    assert -1.0 <= empty.min() and empty.max() <= 1.0
    assert np.abs(with_car - empty).sum() > 10  # the car's square changed the picture


def test_es_data_is_deterministic_and_differs_between_ess():
    cfg = DataConfig(samples_per_es=40)
    assert es_examples(cfg, 0, 1) == es_examples(cfg, 0, 1)
    assert es_examples(cfg, 0, 1) != es_examples(cfg, 0, 2)
    assert es_examples(cfg, 0, 1) != es_examples(cfg, 1, 1)


def test_partitions_are_non_iid_dirichlet_mixtures():
    mixtures = np.array([kind_mixture(0, i, 0.5) for i in range(20)])
    assert np.allclose(mixtures.sum(axis=1), 1.0)
    # with alpha=0.5 the ESs' dominant kinds differ and mixtures are far from uniform
    assert len(set(mixtures.argmax(axis=1))) >= 3
    assert mixtures.max(axis=1).mean() > 0.4
    flat = np.array([kind_mixture(0, i, 1000.0) for i in range(20)])
    assert flat.max(axis=1).mean() < 0.25


def test_heldout_split_does_not_depend_on_any_es():
    cfg = DataConfig(eval_samples=30, samples_per_es=30, tasks=["decide", "describe"])
    heldout = heldout_examples(cfg, 0)
    assert heldout == heldout_examples(cfg, 0)
    assert heldout != es_examples(cfg, 0, 0)
    assert {e.task for e in heldout} == {"decide", "describe"}


def test_unknown_scene_kind_lists_choices():
    with pytest.raises(ValueError, match="valid choices"):
        sample_scene(np.random.default_rng(0), "moon_base")


def test_natural_prompts_word_the_scene_and_keep_the_answers():
    natural = DataConfig(samples_per_es=12, tasks=["decide", "describe"], prompt_style="natural")
    logs = DataConfig(samples_per_es=12, tasks=["decide", "describe"])
    for plain, worded in zip(es_examples(logs, 0, 1), es_examples(natural, 0, 1), strict=True):
        assert plain.answer == worded.answer
        assert plain.prompt != worded.prompt
        if worded.task == "decide":
            assert worded.prompt.startswith("Driving assistant. ")
            assert worded.prompt.endswith("Choose action (stop, slow, go). Action:")
            assert "weather=" not in worded.prompt
        else:
            assert plain.prompt.split("\n")[0] in worded.prompt


def test_unknown_prompt_style_lists_choices():
    with pytest.raises(ValueError, match=r"data.prompt_style.*\['log', 'natural'\]"):
        DataConfig(prompt_style="chatty")


def test_heldout_split_asks_every_scene_as_every_task():
    cfg = DataConfig(eval_samples=30, tasks=["decide", "describe"])
    heldout = heldout_examples(cfg, 0)
    decide = [e for e in heldout if e.task == "decide"]
    describe_ = [e for e in heldout if e.task == "describe"]
    # all 30 scenes count for the decision accuracy, whatever the task mix
    assert len(decide) == len(describe_) == 30
    assert [e.task for e in heldout] == ["decide"] * 30 + ["describe"] * 30
    # and the decision scenes are the same as with the decision task alone
    only_decide = heldout_examples(DataConfig(eval_samples=30, tasks=["decide"]), 0)
    assert only_decide == decide


def test_image_rule_cannot_see_motion_so_a_receding_pedestrian_in_the_path_means_stop():
    receding = scene(("pedestrian", "ahead", "mid", "receding"))
    assert decide_action(receding) == "go"
    assert decide_action(receding, sees_motion=False) == "stop"
    # what an image does show keeps its rule: far away, or beside the path
    assert decide_action(scene(("pedestrian", "ahead", "far", "receding")), False) == "go"
    assert decide_action(scene(("dog", "left", "near", "receding")), False) == "slow"


def test_image_examples_are_labelled_by_the_image_rule_and_text_ones_by_the_full_rule():
    from fed_agent.data.tasks import make_examples

    receding = [scene(("child", "crosswalk", "near", "receding"))]
    rng = np.random.default_rng(0)
    [text] = make_examples(receding, ["decide"], rng)
    [image] = make_examples(receding, ["decide"], rng, image_size=32)
    assert (text.answer, image.answer) == (" slow", " stop")
