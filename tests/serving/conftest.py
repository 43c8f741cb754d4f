"""The smoke agent exported once for the serving tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from fed_agent.config import to_yaml
from fed_agent.packaging.export import export_agent


@pytest.fixture(scope="session")
def smoke_agent_dir(tmp_path_factory, smoke_cfg) -> Path:
    """The smoke agent with its base's own adapter (answers are the pre-trained base's text)."""
    from fed_agent.modules.adapter import agent_module

    module = agent_module(smoke_cfg.model, smoke_cfg.seed)
    return export_agent(
        tmp_path_factory.mktemp("served") / "agent",
        module,
        module.initial_state,
        {"training": "federated", "config_yaml": to_yaml(smoke_cfg)},
    )
