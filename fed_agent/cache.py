"""Where built base models are cached: the one rule every command and every process follows.

``$FED_AGENT_CACHE`` when it is set (a container, a shared disk), else the project's own
``.cache/fed_agent`` next to ``fed_agent/``. ``fed-agent run``, ``evaluate``, ``serve``, the
deploy commands and the tests all resolve the cache here, so a base built by one command is
loaded, not rebuilt, by the next. A run's ``model.cache_dir`` overrides it for that run (the
launcher pins it, because the Flower apps run from a copy of the project elsewhere).
Torch-free: the launcher imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FED_AGENT_CACHE"
PROJECT_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "fed_agent"
"""The default: ``<project>/.cache/fed_agent`` (git-ignored)."""


def default_cache_dir() -> Path:
    """The model cache of this machine: ``$FED_AGENT_CACHE``, else :data:`PROJECT_CACHE`."""
    return Path(os.environ.get(CACHE_ENV) or PROJECT_CACHE).expanduser().resolve()
