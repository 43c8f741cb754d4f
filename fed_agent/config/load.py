"""``load_config``: the one way both Flower apps and every command turn settings into a config.

Hydra's compose API merges ``configs/`` over the dataclass schemas of ``schema.py``; the result
is converted into those dataclasses, whose ``__post_init__`` checks the values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import shlex
import tempfile
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from fed_agent.config.schema import ExperimentConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
RUN_CONFIG_EXPERIMENT = "experiment"
RUN_CONFIG_OVERRIDES = "overrides"
"""The only two keys of Flower's run config: the apps compose everything else themselves."""


class ConfigError(ValueError):
    """A config that cannot be composed or that holds an invalid value."""


def _register_schemas() -> None:
    ConfigStore.instance().store(name="schema", node=ExperimentConfig)


def experiment_names() -> list[str]:
    """Names of the experiment configs under ``configs/experiment``."""
    return sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def split_overrides(overrides: str | Sequence[str]) -> list[str]:
    """Accept Hydra overrides as one shell-like string (Flower's run config) or a list."""
    if isinstance(overrides, str):
        return shlex.split(overrides)
    return list(overrides)


def _valid_keys_hint(overrides: Sequence[str]) -> str:
    """List the valid keys at the level where an override names an unknown one."""
    for override in overrides:
        path = override.split("=", 1)[0].lstrip("+~").split(".")
        node: type | None = ExperimentConfig
        for depth, part in enumerate(path):
            fields = {f.name: f for f in dataclasses.fields(node)} if node else {}
            if part not in fields:
                where = ".".join(path[:depth]) or "the top level"
                return f" Valid keys at {where}: {sorted(fields)}."
            node = fields[part].type if dataclasses.is_dataclass(fields[part].type) else None
            if isinstance(fields[part].default_factory, type):
                node = fields[part].default_factory
            if node is None:
                break
    return ""


def _field_type(key: str) -> object:
    """The schema's type of the dotted ``key`` (None where it names no field)."""
    node: object = ExperimentConfig
    for part in key.split("."):
        hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
        if part not in hints:
            return None
        node = hints[part]
    return node


def _check_overrides(overrides: Sequence[str]) -> None:
    """Refuse what OmegaConf would take quietly: an added key (``+`` or ``++``) that names no
    setting, which the typed config then drops (``+federation.num_ess=20`` changed nothing),
    any value but true or false for a true/false setting (OmegaConf takes
    ``privacy.enabled=-1`` or ``=yes`` for true; interpolations are left to OmegaConf), and a
    list for a config group that holds anything but option names (Hydra fails on
    ``model=[nan]`` with a TypeError). The value is quoted on one line."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return  # compose reports the syntax error with its context
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    for override in parsed:
        key = override.key_or_group
        line = " ".join(str(override.input_line).split())
        given = line.split("=", 1)[-1]
        if override.is_delete():
            continue
        value = override.value()
        if key in groups and isinstance(value, list) and not all(isinstance(v, str) for v in value):
            options = sorted(p.stem for p in (CONFIG_DIR / key).glob("*.yaml"))
            raise ConfigError(f"{key} takes the name of one of {options}, got {given}")
        if override.is_add() or override.is_force_add():
            known = key in groups or key.split(".")[0] == "hydra" or _field_type(key) is not None
            if not known:
                raise ConfigError(
                    f"{line}: no setting {key} to add{_valid_keys_hint([key + '=0'])}"
                )
            continue
        if _field_type(key) is bool and not isinstance(value, bool):
            if not str(value).startswith("${"):
                raise ConfigError(f"{key} must be true or false, got {given}")


def _hydra_message(err: Exception) -> str:
    """Hydra's message on one line, with the reason of a value it refused (Hydra's own message
    names only the override: ``Error merging override federation.num_es=true``)."""
    text = str(err).split("Config search path:")[0]
    message = " ".join(line.strip() for line in text.splitlines() if line.strip())
    cause = err.__cause__
    if isinstance(cause, ValidationError) and str(cause).strip():
        message += f": {str(cause).strip().splitlines()[0]}"
    return message


@functools.lru_cache(maxsize=16)
def _compose(experiment: str, overrides: tuple[str, ...]) -> ExperimentConfig:
    if experiment not in experiment_names():
        raise ConfigError(f"unknown experiment {experiment!r}; valid choices: {experiment_names()}")
    _check_overrides(overrides)
    _register_schemas()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            raw = compose("config", overrides=[f"experiment={experiment}", *overrides])
        cfg = OmegaConf.to_object(raw)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"{_hydra_message(err)}{_valid_keys_hint(overrides)}") from err
    except ValueError as err:  # raised by a schema's __post_init__
        raise ConfigError(str(err)) from err
    except OverflowError as err:  # OmegaConf turning an integer beyond 1e308 into a float
        key = re.search(r"full_key: (\S+)", str(err))
        where = key.group(1) if key else "a number"
        raise ConfigError(f"{where} must be a finite number, got an integer beyond 1e308") from err
    return cfg


def load_config(
    experiment: str = "default", overrides: str | Sequence[str] = ()
) -> ExperimentConfig:
    """Compose ``configs/`` for ``experiment`` with Hydra ``overrides`` into a typed config.

    Parameters
    ----------
    experiment : str
        A file name (without ``.yaml``) under ``configs/experiment``.
    overrides : str or sequence of str
        Hydra overrides such as ``"federation.num_es=20 model=tiny-vlm"``.

    Returns
    -------
    ExperimentConfig
        Validated; the same object for the same arguments within a process (cached).

    Raises
    ------
    ConfigError
        For an unknown experiment, group option or key (the valid choices are listed) and for
        a value that its schema refuses.
    """
    return _compose(experiment, tuple(split_overrides(overrides)))


def config_from_run_config(run_config: Mapping[str, object]) -> ExperimentConfig:
    """The typed config named by a Flower run config (``experiment`` and ``overrides``)."""
    return load_config(
        str(run_config.get(RUN_CONFIG_EXPERIMENT, "default")),
        str(run_config.get(RUN_CONFIG_OVERRIDES, "")),
    )


def hydra_quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value that composes back to exactly ``value``
    (spaces, quotes, ``=``, ``,`` and brackets included): single quotes, with the quotes and
    the backslashes that precede a quote or the end escaped (Hydra keeps other backslashes)."""
    escaped = re.sub(r"(\\+)(?='|\Z)", lambda m: m.group(1) * 2, value)
    return "'" + escaped.replace("'", "\\'") + "'"


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except DEL, which TOML wants escaped."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def run_config_toml(experiment: str, overrides: Sequence[str]) -> str:
    """Flower's run config, as a TOML file's text, that :func:`config_from_run_config` reads
    back exactly: the overrides joined shell-style (``shlex``, split again by
    :func:`split_overrides`) in a TOML string. A file, because Flower's inline
    ``--run-config key="value"`` parser cuts a value at its first quote."""
    joined = shlex.join(overrides)
    return (
        f"{RUN_CONFIG_EXPERIMENT} = {_toml_string(experiment)}\n"
        f"{RUN_CONFIG_OVERRIDES} = {_toml_string(joined)}\n"
    )


@contextlib.contextmanager
def run_config_file(experiment: str, overrides: Sequence[str]) -> Iterator[Path]:
    """A temporary ``.toml`` file of :func:`run_config_toml`, for ``flwr run --run-config``
    (which reads it before it returns); removed on exit."""
    with tempfile.TemporaryDirectory(prefix="fed-agent-run-config-") as folder:
        path = Path(folder) / "run-config.toml"
        path.write_text(run_config_toml(experiment, overrides), encoding="utf-8")
        yield path


def to_yaml(cfg: ExperimentConfig) -> str:
    """Render a resolved config for the run's outputs."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
