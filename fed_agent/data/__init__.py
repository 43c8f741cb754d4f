"""Synthetic perception data: scenes, renderings, tasks and per-ES partitions."""

from fed_agent.data.partition import es_examples, heldout_examples, kind_mixture, public_corpus
from fed_agent.data.scenes import ACTIONS, KIND_NAMES, Scene, decide_action, sample_scenes
from fed_agent.data.tasks import Example, action_candidates

__all__ = [
    "ACTIONS",
    "KIND_NAMES",
    "Example",
    "Scene",
    "action_candidates",
    "decide_action",
    "es_examples",
    "heldout_examples",
    "kind_mixture",
    "public_corpus",
    "sample_scenes",
]
