"""Render a scene as the agent perceives it: a perception log, a description and an image."""

from __future__ import annotations

import numpy as np

from fed_agent.data.scenes import Scene, SceneObject

_DISTANCE_WORDS = {"near": "close by", "mid": "a short way off", "far": "in the distance"}
_MOTION_WORDS = {
    "crossing": "crossing",
    "approaching": "coming closer",
    "stationary": "standing still",
    "receding": "moving away",
}
_POSITION_WORDS = {
    "ahead": "ahead",
    "left": "on the left",
    "right": "on the right",
    "crosswalk": "at the crosswalk",
}
_WEATHER_WORDS = {"clear": "clear weather", "rain": "rain", "fog": "fog", "snow": "snow"}


def perception_log(scene: Scene) -> str:
    """Compact sensor-style text: the input of the text agent's tasks."""
    objects = " ; ".join(f"{o.kind} {o.position} {o.distance} {o.motion}" for o in scene.objects)
    return f"weather={scene.weather} light={scene.light} | {objects}"


def _describe_object(obj: SceneObject) -> str:
    return (
        f"a {obj.kind} {_POSITION_WORDS[obj.position]} {_DISTANCE_WORDS[obj.distance]}, "
        f"{_MOTION_WORDS[obj.motion]}"
    )


def describe(scene: Scene) -> str:
    """Natural-language description: the target of the ``describe`` task."""
    when = "At night" if scene.light == "night" else "By day"
    objects = "; ".join(_describe_object(o) for o in scene.objects)
    return f"{when} in {_WEATHER_WORDS[scene.weather]}: {objects}."


_OBJECT_COLOURS = {
    "pedestrian": (255, 60, 60),
    "cyclist": (255, 160, 0),
    "child": (255, 0, 200),
    "dog": (150, 90, 40),
    "car": (40, 90, 255),
    "truck": (0, 40, 140),
    "bus": (0, 200, 255),
    "cone": (255, 255, 0),
    "debris": (120, 120, 120),
}
_SKY = {"day": (150, 200, 255), "night": (15, 15, 45)}


def render_image(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(3, size, size)`` float32 image in [-1, 1]: road, sky, weather noise, objects.

    Objects are squares whose column follows the position, whose row and size follow the
    distance (near = low and large), and whose colour encodes the kind.
    """
    img = np.zeros((size, size, 3), dtype=np.float32)
    horizon = size // 3
    img[:horizon] = _SKY[scene.light]
    img[horizon:] = (70, 70, 70) if scene.light == "day" else (30, 30, 30)
    for obj in scene.objects:
        col = {"left": 0.2, "ahead": 0.5, "crosswalk": 0.5, "right": 0.8}[obj.position]
        row = {"near": 0.85, "mid": 0.6, "far": 0.42}[obj.distance]
        half = max(1, int(size * {"near": 0.12, "mid": 0.07, "far": 0.04}[obj.distance]))
        cy, cx = int(row * size), int(col * size)
        img[max(0, cy - half) : cy + half, max(0, cx - half) : cx + half] = _OBJECT_COLOURS[
            obj.kind
        ]
        if obj.position == "crosswalk":
            img[min(size - 1, cy + half), ::2] = 255
    if scene.weather == "fog":
        img = 0.5 * img + 0.5 * 200
    elif scene.weather in ("rain", "snow"):
        level = 255 if scene.weather == "snow" else 120
        mask = rng.random((size, size)) < 0.06
        img[mask] = level
    img = img / 127.5 - 1.0
    return np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32)
