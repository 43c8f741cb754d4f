"""Every experiment composes; bad configs fail at compose time with the valid choices."""

from __future__ import annotations

import pytest

from fed_agent.config import ConfigError, ExperimentConfig, experiment_names, load_config


@pytest.mark.parametrize("experiment", experiment_names())
def test_every_experiment_composes_into_the_schema(experiment):
    cfg = load_config(experiment)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.run_name == experiment


def test_defaults_come_from_the_schema_and_overrides_apply():
    cfg = load_config("default", "federation.num_es=20 training.local_steps=7")
    assert cfg.federation.num_es == 20
    assert cfg.training.local_steps == 7
    assert cfg.model.name == "tiny-llm"


def test_group_option_switches_the_model():
    assert load_config("default", ["model=tiny-vlm"]).model.name == "tiny-vlm"


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError, match=r"Valid keys at federation: \[.*'num_es'"):
        load_config("default", "federation.num_ess=3")


def test_unknown_group_option_lists_the_available_options():
    with pytest.raises(ConfigError, match="Available options in 'model'"):
        load_config("default", "model=gpt-17")


def test_unknown_experiment_lists_the_experiments():
    with pytest.raises(ConfigError, match=r"valid choices: \[.*'smoke'"):
        load_config("nope")


def test_invalid_value_is_refused_with_the_field_name():
    with pytest.raises(ConfigError, match="federation.num_es must be >= 1"):
        load_config("default", "federation.num_es=0")


def test_wrong_type_is_refused():
    with pytest.raises(ConfigError):
        load_config("default", "training.batch_size=many")


def test_agent_section_defaults_overrides_and_errors():
    from fed_agent.config.schema import AgentConfig

    assert load_config("default").agent == AgentConfig(module_name="agent", extend="")
    cfg = load_config("default", ["agent.module_name=decision", "agent.extend=out/p/agent"])
    assert (cfg.agent.module_name, cfg.agent.extend) == ("decision", "out/p/agent")
    with pytest.raises(
        ConfigError, match=r"Valid keys at agent: \['extend', 'merged', 'module_name'\]"
    ):
        load_config("default", ["agent.modul_name=decision"])
    with pytest.raises(ConfigError, match="agent.module_name must start with a letter"):
        load_config("default", ["agent.module_name=../x"])
