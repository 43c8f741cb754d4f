"""`fed-agent models convert`: a registry base as a standard folder that model=hf loads."""

from __future__ import annotations

import pytest

from fed_agent.cli import main
from fed_agent.config import load_config
from fed_agent.models.registry import load_base


def test_convert_prints_a_folder_that_model_hf_loads_as_the_same_base(capsys):
    assert main(["models", "convert", "tiny-llm"]) == 0
    folder = capsys.readouterr().out.splitlines()[0]
    registry = load_base(load_config("default").model, 0)
    hf = load_base(load_config("default", ["model=hf", f"model.path={folder}"]).model, 0)
    assert str(registry.path) == folder and hf.fingerprint == registry.fingerprint


def test_convert_refuses_a_bad_override_in_one_line(caplog):
    assert main(["models", "convert", "tiny-llm", "model.lora_r=0"]) == 2
    assert "model.lora_r must be >= 1" in caplog.text


def test_convert_names_only_convertible_bases():
    with pytest.raises(SystemExit):
        main(["models", "convert", "minilm-perception"])
