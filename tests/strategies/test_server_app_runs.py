"""The ServerApp's main on an in-process federation (the real ClientApp handlers).

The no-contract baseline runs Flower's FedAvg on plain TRAIN messages; a run in which no ES
ever takes part fails and exports nothing; the project's log lines reach the console the
ServerApp's log is read from.
"""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from flwr.app import Context, RecordDict

from fed_agent.console import show_project_logs
from strategies import server_app
from tests.strategies.fake_grid import HandlerGrid, set_task_identity

NODES = [11, 12, 13]


def _context(tmp_path, overrides: str) -> Context:
    set_task_identity(0)  # the cloud's messages are made in this process
    return Context(
        run_id=1,
        node_id=0,
        state=RecordDict(),
        node_config={},
        run_config={"experiment": "smoke", "overrides": f"output_dir={tmp_path} {overrides}"},
    )


@pytest.mark.timeout(300)
def test_incentive_none_runs_flowers_fedavg_on_plain_train_messages(tmp_path, capsys):
    overrides = "incentive=none federation.num_rounds=1"
    grid = HandlerGrid(NODES, "smoke", overrides)
    server_app.main(grid, _context(tmp_path, overrides))
    run_dir = tmp_path / "smoke"
    metrics = pd.read_csv(run_dir / "metrics.csv").set_index("round")
    assert metrics.loc[1, "participants"] == 3 and metrics.loc[1, "payments"] == 0
    assert metrics.loc[1, "answer_loss"] < metrics.loc[0, "answer_loss"]
    assert not (run_dir / "ledger.csv").exists()
    assert (run_dir / "agent" / "manifest.json").is_file()
    # only plain TRAIN messages: no query, no contract key
    assert {m.metadata.message_type for m in grid.sent} == {"train"}
    assert all("local-steps" not in m.content["config"] for m in grid.sent)
    # the project's INFO lines are on the console Flower mirrors into `flwr log`
    err = capsys.readouterr().err
    assert "round 1 held-out: accuracy" in err and "exported the agent" in err


@pytest.mark.timeout(300)
def test_a_run_in_which_no_es_ever_takes_part_fails_and_exports_nothing(tmp_path):
    overrides = "incentive=optimal federation.num_rounds=3"
    grid = HandlerGrid(NODES, "smoke", overrides, stock=NODES)
    with pytest.raises(server_app.NoParticipantsError, match="no ES took part in any of the 3"):
        server_app.main(grid, _context(tmp_path, overrides))
    run_dir = tmp_path / "smoke"
    assert not (run_dir / "agent").exists()
    ledger = pd.read_csv(run_dir / "ledger.csv")
    assert list(ledger["status"]) == ["incompatible"] * 3  # once each, never asked again
    queries = [m for m in grid.sent if m.metadata.message_type == "query"]
    assert len(queries) == 3


@pytest.mark.timeout(300)
def test_a_stock_node_among_fedagent_nodes_is_recorded_once_and_the_others_train(tmp_path):
    overrides = "incentive=optimal federation.num_rounds=1"
    grid = HandlerGrid(NODES, "smoke", overrides, stock=[NODES[0]])
    server_app.main(grid, _context(tmp_path, overrides))
    ledger = pd.read_csv(tmp_path / "smoke" / "ledger.csv")
    stock_rows = ledger[ledger["node_id"] == NODES[0]]
    assert list(stock_rows["status"]) == ["incompatible"] and stock_rows["paid"].sum() == 0
    assert (ledger["status"] == "paid").sum() == 2
    metrics = pd.read_csv(tmp_path / "smoke" / "metrics.csv").set_index("round")
    assert metrics.loc[1, "incompatible_es"] == 1


def test_project_logs_get_one_console_handler(capsys):
    show_project_logs()
    show_project_logs()
    assert (
        sum(
            getattr(h, "_fed_agent_console", False)
            for h in logging.getLogger("strategies").handlers
        )
        == 1
    )
    logging.getLogger("strategies.some_module").info("visible line")
    assert "INFO    : strategies.some_module: visible line" in capsys.readouterr().err
