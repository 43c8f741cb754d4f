"""Explicit randomness: seed once per entry point, derive every other seed from it."""

from __future__ import annotations

import random

import numpy as np
import torch


def derive_seed(base: int, *keys: int) -> int:
    """A 32-bit seed derived from ``base`` and integer keys (stable across runs and platforms)."""
    return int(np.random.SeedSequence([base, *keys]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's legacy and torch's global generators (for library internals)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code still reads the legacy state
    torch.manual_seed(seed)


def torch_generator(seed: int) -> torch.Generator:
    """A CPU torch.Generator seeded with ``seed``."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
