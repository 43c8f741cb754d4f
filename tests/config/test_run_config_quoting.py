"""Overrides and paths with spaces and quotes reach the Flower apps intact.

The launcher pins paths as quoted Hydra values and hands the overrides to ``flwr run`` in a
run-config TOML file; the apps read them back with ``config_from_run_config``. These tests go
through Flower's own run-config parser (what ``flwr run --run-config`` calls).
"""

from __future__ import annotations

import pytest
from flwr.common.config import parse_config_args

from fed_agent.config import config_from_run_config, hydra_quoted, load_config, run_config_file
from fed_agent.deploy.launcher import effective_overrides

NASTY = [
    "my run",
    "it's",
    'say "hi"',
    "both 'single' and \"double\"",
    "back\\slash",
    "trailing backslash\\",
    "quote after backslash \\'",
    "a=b, c[1] {x: y}",
    "ünïcode ✓",
]


FREE_TEXT = "model.cache_dir"
"""A string field whose schema takes any text (run names refuse path separators)."""


@pytest.mark.parametrize("value", NASTY)
def test_a_quoted_hydra_value_composes_back_to_exactly_the_value(value):
    cfg = load_config("smoke", [f"{FREE_TEXT}={hydra_quoted(value)}"])
    assert cfg.model.cache_dir == value


def _through_flower(experiment: str, items: list[str]):
    """What the apps compose from the run config ``flwr run`` reads out of our TOML file."""
    with run_config_file(experiment, items) as path:
        assert " " not in path.name and path.suffix == ".toml"
        run_config = parse_config_args([str(path)])
    return run_config, config_from_run_config(run_config)


def test_overrides_with_spaces_and_quotes_reach_the_apps_intact(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output_dir = tmp_path / "out dir" / 'it\'s "here"'
    given = [
        f"run_name={hydra_quoted(NASTY[3])}",
        f"output_dir={hydra_quoted(str(output_dir))}",
        "federation.resume_from='runs/old run'",
        "federation.num_rounds=1",
    ]
    cfg = load_config("smoke", given)
    items = effective_overrides(given, cfg, tmp_path / "cache dir's")
    run_config, app_cfg = _through_flower("smoke", items)
    assert run_config["experiment"] == "smoke"
    assert app_cfg.run_name == NASTY[3]
    assert app_cfg.output_dir == str(output_dir)
    assert app_cfg.federation.resume_from == str(tmp_path / "runs" / "old run")
    assert app_cfg.model.cache_dir == str(tmp_path / "cache dir's")
    assert app_cfg.federation.num_rounds == 1


def test_every_nasty_value_survives_the_run_config_file():
    for value in NASTY:
        _, app_cfg = _through_flower("smoke", [f"{FREE_TEXT}={hydra_quoted(value)}"])
        assert app_cfg.model.cache_dir == value
