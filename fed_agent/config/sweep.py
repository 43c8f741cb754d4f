"""Hydra's multirun sweeps: ``seed=0,1,2 model=tiny-llm,tiny-vlm`` is one job per combination.

The overrides are parsed by Hydra's own override grammar; a comma list, ``choice(...)`` or
``range(...)`` sweeps its key (as Hydra's basic sweeper does), every other override is passed
to each job unchanged. Jobs are ordered as Hydra orders them: the cartesian product of the
sweeps in the order their keys were given, the last one varying fastest.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from fed_agent.config.load import ConfigError


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The override list of every job of the sweep ``overrides`` (one job when none sweeps).

    Raises
    ------
    ConfigError
        For an override Hydra cannot parse, a sweep that is not discrete (``interval(...)``,
        which needs an optimising sweeper) and a key given twice.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(str(err)) from err
    choices: dict[str, list[str]] = {}
    for text, override in zip(overrides, parsed, strict=True):
        key = override.get_key_element()
        if key in choices:
            raise ConfigError(f"multirun: {key} is given twice; give its values as one list")
        if not override.is_sweep_override():
            choices[key] = [text]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ConfigError(f"multirun: {text!r} is not a list of values (use a,b or range)")
    return [list(job) for job in itertools.product(*choices.values())]
