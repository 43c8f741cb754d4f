"""Synthetic mobile-metaverse scenes and the agent's ground-truth labels.

A scene is what an ES's sensors perceive around a vehicle or avatar: objects with a position,
distance and motion, plus weather and light. Scenes come in *kinds* (urban crossing, highway,
...) that differ in which objects appear; ESs see different mixtures of kinds (non-IID).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OBJECTS = ("pedestrian", "cyclist", "child", "dog", "car", "truck", "bus", "cone", "debris")
VULNERABLE = frozenset({"pedestrian", "cyclist", "child", "dog"})
POSITIONS = ("ahead", "left", "right", "crosswalk")
DISTANCES = ("near", "mid", "far")
MOTIONS = ("crossing", "approaching", "stationary", "receding")
WEATHERS = ("clear", "rain", "fog", "snow")
LIGHTS = ("day", "night")
ACTIONS = ("stop", "slow", "go")

# Object frequencies per scene kind (same order as OBJECTS): what makes ESs non-IID.
SCENE_KINDS: dict[str, tuple[float, ...]] = {
    "urban_crossing": (5, 2, 2, 1, 3, 1, 2, 0.5, 0.2),
    "highway": (0.1, 0.1, 0.0, 0.1, 6, 4, 1, 1, 1),
    "residential": (2, 2, 4, 3, 2, 0.2, 0.2, 0.5, 0.2),
    "parking_lot": (3, 0.5, 1, 1, 6, 1, 0.2, 1, 0.2),
    "rural_road": (0.3, 1, 0.2, 2, 2, 3, 0.1, 0.3, 2),
}
KIND_NAMES = tuple(SCENE_KINDS)
_WEATHER_P = (0.55, 0.2, 0.12, 0.13)


@dataclass(frozen=True)
class SceneObject:
    """One perceived object."""

    kind: str
    position: str
    distance: str
    motion: str


@dataclass(frozen=True)
class Scene:
    """One perceived scene with its ground truth."""

    kind: str
    weather: str
    light: str
    objects: tuple[SceneObject, ...]

    @property
    def action(self) -> str:
        """The safe driving decision: ``stop``, ``slow`` or ``go`` (see :func:`decide_action`)."""
        return decide_action(self)


def _in_path(obj: SceneObject) -> bool:
    return obj.position in ("ahead", "crosswalk")


def decide_action(scene: Scene, sees_motion: bool = True) -> str:
    """Ground-truth rule of the decision task.

    stop: a vulnerable road user in the path (ahead or on the crosswalk) that is near or mid and
    crossing or approaching, or debris near ahead. slow: any other vulnerable user near, a
    vehicle near in the path, a cone in the path, fog or snow, or rain at night. go: otherwise.

    With ``sees_motion=False`` (the rule of the image task: one still frame cannot show
    whether a road user is crossing or moving away) every vulnerable user near or mid in the
    path counts as moving in: stop whatever its motion.
    """
    for obj in scene.objects:
        moving_in = obj.motion in ("crossing", "approaching") or not sees_motion
        if obj.kind in VULNERABLE and _in_path(obj) and obj.distance != "far" and moving_in:
            return "stop"
        if obj.kind == "debris" and _in_path(obj) and obj.distance == "near":
            return "stop"
    for obj in scene.objects:
        if obj.kind in VULNERABLE and obj.distance == "near":
            return "slow"
        if obj.kind in ("car", "truck", "bus") and _in_path(obj) and obj.distance == "near":
            return "slow"
        if obj.kind == "cone" and _in_path(obj):
            return "slow"
    if scene.weather in ("fog", "snow") or (scene.weather == "rain" and scene.light == "night"):
        return "slow"
    return "go"


def sample_scene(rng: np.random.Generator, kind: str) -> Scene:
    """Draw one scene of ``kind``."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; valid choices: {sorted(SCENE_KINDS)}")
    weights = np.asarray(SCENE_KINDS[kind], dtype=float)
    n_objects = int(rng.integers(1, 4))
    objects = []
    for _ in range(n_objects):
        obj_kind = OBJECTS[int(rng.choice(len(OBJECTS), p=weights / weights.sum()))]
        motion = "stationary" if obj_kind in ("cone", "debris") else str(rng.choice(MOTIONS))
        objects.append(
            SceneObject(obj_kind, str(rng.choice(POSITIONS)), str(rng.choice(DISTANCES)), motion)
        )
    weather = WEATHERS[int(rng.choice(len(WEATHERS), p=_WEATHER_P))]
    light = LIGHTS[int(rng.integers(0, 2))]
    return Scene(kind, weather, light, tuple(objects))


def sample_scenes(
    rng: np.random.Generator, n: int, kind_weights: np.ndarray | None = None
) -> list[Scene]:
    """Draw ``n`` scenes whose kinds follow ``kind_weights`` (uniform when None)."""
    p = np.full(len(KIND_NAMES), 1 / len(KIND_NAMES)) if kind_weights is None else kind_weights
    kinds = rng.choice(len(KIND_NAMES), size=n, p=p / p.sum())
    return [sample_scene(rng, KIND_NAMES[int(k)]) for k in kinds]
