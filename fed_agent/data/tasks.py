"""The agent's tasks as prompt/answer examples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fed_agent.data.render import describe, perception_log, render_image
from fed_agent.data.scenes import ACTIONS, Scene

DECIDE_PROMPT = "{log}\nAction:"
DESCRIBE_PROMPT = "{log}\nDescribe:"
IMAGE_DECIDE_PROMPT = "Scene image.\nAction:"
IMAGE_DESCRIBE_PROMPT = "Scene image.\nDescribe:"


@dataclass(frozen=True)
class Example:
    """One supervised example: the model sees ``prompt`` and must produce ``answer``.

    ``image`` is set for vision tasks (shape (3, H, W), float32 in [-1, 1]).
    """

    task: str
    prompt: str
    answer: str
    image: np.ndarray | None = None


def make_examples(
    scenes: list[Scene], tasks: list[str], rng: np.random.Generator, image_size: int | None = None
) -> list[Example]:
    """Turn scenes into examples, one per scene, cycling through ``tasks``.

    With ``image_size`` the prompt is the rendered image instead of the perception log.
    """
    examples = []
    for i, scene in enumerate(scenes):
        task = tasks[i % len(tasks)]
        image = render_image(scene, image_size, rng) if image_size else None
        examples.append(_example(scene, task, image))
    return examples


def _example(scene: Scene, task: str, image: np.ndarray | None) -> Example:
    log = perception_log(scene)
    if task == "decide":
        prompt = IMAGE_DECIDE_PROMPT if image is not None else DECIDE_PROMPT.format(log=log)
        return Example(task, prompt, f" {scene.action}", image)
    if task == "describe":
        prompt = IMAGE_DESCRIBE_PROMPT if image is not None else DESCRIBE_PROMPT.format(log=log)
        return Example(task, prompt, f" {describe(scene)}", image)
    raise ValueError(f"unknown task {task!r}; valid choices: ['decide', 'describe']")


def action_candidates() -> list[str]:
    """Answers scored by the decision-accuracy metric, in ACTIONS order."""
    return [f" {a}" for a in ACTIONS]


def pretraining_corpus(scenes: list[Scene]) -> list[str]:
    """Public domain text for the tiny base: logs and descriptions, never paired with a task."""
    lines = []
    for i, scene in enumerate(scenes):
        lines.append(perception_log(scene) if i % 2 else describe(scene))
    lines.extend(f"Possible actions: {', '.join(ACTIONS)}." for _ in range(len(scenes) // 50 + 1))
    return lines
