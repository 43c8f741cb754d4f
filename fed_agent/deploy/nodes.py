"""SuperNode node configs: partition, number of partitions, identity key and private profile.

An ES's private facts (its partition, later its willingness type, ...) live in its
SuperNode's ``--node-config`` and never travel to the server. The identity key
(``protocol.IDENTITY_KEY``) is the file of the SuperNode's authentication key unless the
profile names another: with it the ES proves to a resumed cloud which ES it is
(``fed_agent.es_keys``). A per-node profile is a flat
YAML mapping whose keys are passed through verbatim, so keys the ClientApp learns to read
later need no change here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from fed_agent.protocol import IDENTITY_KEY, NUM_PARTITIONS, PARTITION_ID

Scalar = bool | int | float | str


def load_profile(path: Path) -> dict[str, Scalar]:
    """Read a per-ES profile: a flat YAML mapping of node-config keys to scalars.

    Raises
    ------
    ValueError
        One line naming the file: not YAML, not a mapping, or a key that holds no scalar.
    """
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        problem = " ".join(str(err).split())
        raise ValueError(f"profile {path} is not a YAML mapping: {problem}") from err
    if not isinstance(data, dict):
        raise ValueError(f"profile {path} must be a mapping of node-config keys, got {data!r}")
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, Scalar):
            raise ValueError(f"profile {path}: {key!r} must map to a scalar, got {value!r}")
        _check_finite(f"profile {path}", key, value)
    return data


def _check_finite(where: str, key: str, value: Scalar) -> None:
    """Refuse a NaN or infinite node-config number here, not when an ES first reads it."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {key!r} must be a finite number, got {value!r}")


def parse_pairs(pairs: Sequence[str]) -> dict[str, Scalar]:
    """``key=value`` strings -> mapping; values are read as YAML scalars (``2`` is an int)."""
    out: dict[str, Scalar] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:  # no YAML scalar: the text itself, as for a list or mapping
            value = raw
        out[key] = value if isinstance(value, Scalar) else raw
        _check_finite("--node-config", key, out[key])
    return out


def node_config(
    partition_id: int,
    num_partitions: int,
    profile: Mapping[str, Scalar] | None = None,
    auth_key: Path | None = None,
) -> dict[str, Scalar]:
    """The node config of one ES; the profile may not contradict the partition given. With
    the SuperNode's ``auth_key``, that file is the ES's identity key unless the profile names
    one."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition id {partition_id} is outside [0, {num_partitions})")
    config: dict[str, Scalar] = {**(profile or {})}
    if auth_key is not None:
        config.setdefault(IDENTITY_KEY, str(auth_key.resolve()))
    for key, value in ((PARTITION_ID, partition_id), (NUM_PARTITIONS, num_partitions)):
        if key in config and config[key] != value:
            raise ValueError(f"profile sets {key}={config[key]!r}, command line says {value}")
        config[key] = value
    return config


def node_config_arg(config: Mapping[str, Scalar]) -> str:
    """Render for ``flower-supernode --node-config``: space separated TOML ``key=value``."""
    parts = []
    for key, value in config.items():
        if any(c.isspace() or c in "=\"'" for c in key):
            raise ValueError(f"node-config key {key!r} may not hold spaces, '=' or quotes")
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int | float):
            rendered = repr(value)
        elif '"' in value or "\\" in value or not value.isprintable():
            # flwr splits --node-config with a regex that knows no escapes
            raise ValueError(f"node-config value {value!r} may not hold quotes or backslashes")
        else:
            rendered = f'"{value}"'
        parts.append(f"{key}={rendered}")
    return " ".join(parts)
