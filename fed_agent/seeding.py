"""Explicit randomness: seed once per entry point, derive every other seed from it."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import numpy as np


def derive_seed(base: int, *keys: int | str) -> int:
    """A 32-bit seed that depends only on ``base`` and ``keys`` (stable across processes).

    Strings are hashed with SHA-256, not ``hash()``, which is salted per process.
    """
    words = [int(base) & 0xFFFFFFFF]
    for key in keys:
        if isinstance(key, str):
            words.append(int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little"))
        else:
            words.append(int(key) & 0xFFFFFFFF)
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def rng_for(base: int, *keys: int | str) -> np.random.Generator:
    """A NumPy generator seeded by :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(base, *keys))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's legacy and (if installed) torch's global generators.

    The project's own draws take explicit generators; this is for library internals.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code still reads the legacy state
    try:
        import torch
    except ImportError:  # the contract tools run without torch
        return
    torch.manual_seed(seed)


def torch_generator(seed: int):
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block on ``count`` torch intra-op threads; the process's own count comes back.

    A multi-threaded CPU kernel splits its sums by the thread count, so the same computation on
    1 and on 2 threads can differ in the last bits; what must be identical on every machine
    and in every process runs on a fixed count.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
