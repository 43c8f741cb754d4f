"""The agent's tasks as prompt/answer examples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fed_agent.choices import check_choice
from fed_agent.config.schema import PROMPT_STYLES, TASKS
from fed_agent.data.render import describe, perception_log, render_image
from fed_agent.data.scenes import ACTIONS, Scene, decide_action

DECIDE_PROMPT = "{log}\nAction:"
DESCRIBE_PROMPT = "{log}\nDescribe:"
NATURAL_DECIDE_PROMPT = "Driving assistant. {scene} Choose action (stop, slow, go). Action:"
NATURAL_DESCRIBE_PROMPT = "Driving assistant. Sensor log: {log}. Describe the scene:"
IMAGE_DECIDE_PROMPT = "Scene image.\nAction:"
IMAGE_DESCRIBE_PROMPT = "Scene image.\nDescribe:"


@dataclass(frozen=True)
class Example:
    """One supervised example: the model sees ``prompt`` and must produce ``answer``.

    ``image`` is set for vision tasks (shape (3, H, W), float32 in [-1, 1]). ``choices`` is
    the closed answer set an example from files is scored over (each with the answer's leading
    space); empty for the synthetic tasks (``decide`` is scored over :func:`action_candidates`)
    and for free-text answers.
    """

    task: str
    prompt: str
    answer: str
    image: np.ndarray | None = None
    choices: tuple[str, ...] = ()


def make_examples(
    scenes: list[Scene],
    tasks: list[str],
    rng: np.random.Generator,
    image_size: int | None = None,
    prompt_style: str = "log",
) -> list[Example]:
    """Turn scenes into examples, one per scene, cycling through ``tasks``.

    With ``image_size`` the prompt is the rendered image instead of the perception log;
    ``prompt_style`` (one of :data:`PROMPT_STYLES`) words the text prompts.
    """
    check_choice("data.prompt_style", prompt_style, PROMPT_STYLES)
    for task in tasks:
        check_choice("data.tasks", task, TASKS)
    examples = []
    for i, scene in enumerate(scenes):
        task = tasks[i % len(tasks)]
        image = render_image(scene, image_size, rng) if image_size else None
        examples.append(_example(scene, task, image, prompt_style))
    return examples


def _text_prompt(scene: Scene, task: str, prompt_style: str) -> str:
    log = perception_log(scene)
    if prompt_style == "natural":
        if task == "decide":
            return NATURAL_DECIDE_PROMPT.format(scene=describe(scene))
        return NATURAL_DESCRIBE_PROMPT.format(log=log)
    return (DECIDE_PROMPT if task == "decide" else DESCRIBE_PROMPT).format(log=log)


def _example(scene: Scene, task: str, image: np.ndarray | None, prompt_style: str) -> Example:
    if image is not None:
        prompt = IMAGE_DECIDE_PROMPT if task == "decide" else IMAGE_DESCRIBE_PROMPT
    else:
        prompt = _text_prompt(scene, task, prompt_style)
    if task == "decide":
        # a still image shows no motion: its examples follow the rule an image can show
        answer = decide_action(scene, sees_motion=image is None)
    else:
        answer = describe(scene)
    return Example(task, prompt, f" {answer}", image)


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
