"""Per-ES data (non-IID by a Dirichlet mixture over scene kinds) and the held-out split.

Each ES generates only its own data from a seed derived from (seed, partition id), so the data
of one ES never exists anywhere else; the held-out evaluation split and the cloud's own small
split (its reference data for judging updates) come from separate seed streams that no ES
draws from.

flwr-datasets' DirichletPartitioner needs a Hugging Face ``datasets`` table of the whole
population; generating per ES is cheaper and keeps each ES's data private by construction.
"""

from __future__ import annotations

import numpy as np

from fed_agent.config.schema import DataConfig
from fed_agent.data.scenes import KIND_NAMES, Scene, sample_scenes
from fed_agent.data.tasks import Example, make_examples, pretraining_corpus
from fed_agent.seeding import rng_for


def kind_mixture(seed: int, partition_id: int, alpha: float) -> np.ndarray:
    """The scene-kind proportions of one ES: a draw from Dirichlet(alpha, ..., alpha)."""
    return rng_for(seed, "kind-mixture", partition_id).dirichlet(np.full(len(KIND_NAMES), alpha))


def es_scenes(cfg: DataConfig, seed: int, partition_id: int) -> list[Scene]:
    """The scenes an ES perceives."""
    if partition_id < 0:
        raise ValueError(f"partition id must be >= 0, got {partition_id}")
    mixture = kind_mixture(seed, partition_id, cfg.dirichlet_alpha)
    return sample_scenes(rng_for(seed, "es-scenes", partition_id), cfg.samples_per_es, mixture)


def es_examples(
    cfg: DataConfig, seed: int, partition_id: int, with_images: bool = False
) -> list[Example]:
    """Training examples of one ES (images instead of logs when ``with_images``)."""
    scenes = es_scenes(cfg, seed, partition_id)
    rng = rng_for(seed, "es-render", partition_id)
    size = cfg.image_size if with_images else None
    return make_examples(scenes, cfg.tasks, rng, size, cfg.prompt_style)


def heldout_examples(cfg: DataConfig, seed: int, with_images: bool = False) -> list[Example]:
    """The evaluation split: ``cfg.eval_samples`` scenes, uniform over scene kinds, never
    trained on; every scene is asked as each task of ``cfg.tasks`` (task by task, in order),
    so the decision accuracy is measured on all ``eval_samples`` scenes whatever the mix."""
    scenes = sample_scenes(rng_for(seed, "heldout-scenes"), cfg.eval_samples)
    size = cfg.image_size if with_images else None
    return [
        example
        for task in cfg.tasks
        for example in make_examples(
            scenes, [task], rng_for(seed, "heldout-render", task), size, cfg.prompt_style
        )
    ]


def cloud_examples(
    cfg: DataConfig, seed: int, size: int, with_images: bool = False
) -> list[Example]:
    """The cloud's own small labelled split (``size`` scenes, uniform over scene kinds): what
    it computes its reference update on to judge the ESs' updates (FLTrust's root data set).
    A seed stream of its own: never an ES's data, never the held-out evaluation split."""
    scenes = sample_scenes(rng_for(seed, "cloud-scenes"), size)
    rng = rng_for(seed, "cloud-render")
    return make_examples(
        scenes, cfg.tasks, rng, cfg.image_size if with_images else None, cfg.prompt_style
    )


def public_corpus(seed: int, size: int) -> list[str]:
    """Text the base model is pre-trained on (a public stream, disjoint from all ESs)."""
    return pretraining_corpus(sample_scenes(rng_for(seed, "public-corpus"), size))
