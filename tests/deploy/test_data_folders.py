"""Own data in a deployment: every SuperNode names its own data folder, one of them broken.

A TLS + auth federation of 3 SuperNodes on 127.0.0.1 whose node configs name three different
folders (``data-path``, what ``fed-agent deploy supernode --data-path`` sets): two hold an ES's
exported synthetic data, the third an unreadable line. The run completes with the two; the
broken ES declines: it is recorded once in the ledger as ``declined`` with its reason (file
and line, not the folder's path) and is never offered work or paid. Slow and ``deploy`` (``make test-deploy``).
"""

from __future__ import annotations

import pandas as pd
import pytest

from fed_agent.config import load_config
from fed_agent.data.synthetic_export import export_synthetic
from fed_agent.deploy.flwr_cli import COMPLETED
from fed_agent.deploy.local import local_federation, run_experiment
from fed_agent.protocol import DATA_DECLINE
from tests.deploy.helpers import round_metrics

pytestmark = [pytest.mark.slow, pytest.mark.deploy]
RUN_TIMEOUT_S = 600


@pytest.mark.timeout(RUN_TIMEOUT_S + 300)  # also brings the federation up
def test_supernodes_train_on_their_own_folders_and_a_broken_one_is_recorded_unpaid(tmp_path):
    cfg = load_config("smoke")
    root = tmp_path / "data"
    export_synthetic(cfg.data, cfg.seed, 3, cfg.screening.reference_samples, False, root)
    broken = root / "es" / "2" / "data.jsonl"
    lines = broken.read_text().splitlines()
    broken.write_text("\n".join([*lines[:4], "{oops", *lines[4:]]) + "\n")
    profiles = [{"data-path": str(root / "es" / str(i))} for i in range(3)]
    overrides = [
        f"output_dir={tmp_path / 'out'}",
        "data.source=files",
        f"data.eval_path={root / 'eval'}",
        f"data.cloud_path={root / 'cloud'}",
        "federation.min_available_es=3",
    ]

    with local_federation(3, tmp_path / "federation", profiles) as federation:
        outcome = run_experiment(federation.env, "smoke", overrides, timeout_s=RUN_TIMEOUT_S)
        node_ids = [n.node_id for n in federation.supernodes]

    assert outcome.status == COMPLETED
    ledger = pd.read_csv(outcome.output_dir / "ledger.csv")
    recorded = ledger[ledger["node_id"] == node_ids[2]]
    assert recorded["status"].tolist() == ["declined"]
    assert recorded["paid"].tolist() == [0.0]
    (reason,) = recorded["reason"].tolist()
    assert reason.startswith(f"{DATA_DECLINE}: data.jsonl:5: unreadable line")
    assert str(root) not in reason
    paid = ledger[ledger["status"] == "paid"]
    assert sorted(paid["node_id"].tolist()) == sorted([node_ids[0], node_ids[1]] * 2)
    assert (paid["wall_s"] > 0).all()  # they trained, on their own folders
    metrics = round_metrics(outcome.output_dir)
    assert metrics.loc[1, "participants"] == 2 and metrics.loc[2, "participants"] == 2
