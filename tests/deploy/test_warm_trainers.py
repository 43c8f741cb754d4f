"""A real TLS + auth federation whose SuperNodes have warm trainers: the run completes, every
TRAIN message is answered by the node's trainer, and every process (trainers included) and
socket folder is gone afterwards. Runs in CI with the other deployment tests."""

from __future__ import annotations

import pandas as pd
import psutil
import pytest

from fed_agent.deploy.flwr_cli import COMPLETED
from fed_agent.deploy.local import local_federation, run_experiment
from tests.deploy.helpers import all_gone, round_metrics

pytestmark = [pytest.mark.slow, pytest.mark.deploy]
RUN_TIMEOUT_S = 600


@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
def test_a_federation_with_warm_trainers_trains_in_them_and_cleans_up(tmp_path) -> None:
    with local_federation(2, tmp_path / "federation", warm_trainers=True) as federation:
        trainers = [n.trainer for n in federation.supernodes]
        sockets = [n.trainer_socket for n in federation.supernodes]
        assert all(t is not None and t.poll() is None for t in trainers)
        outcome = run_experiment(
            federation.env,
            "smoke",
            [f"output_dir={tmp_path / 'out'}", "federation.num_es=2", "federation.es_per_round=2"],
            timeout_s=RUN_TIMEOUT_S,
        )
        pids = [t.pid for t in trainers] + [n.process.pid for n in federation.supernodes]
        pids += [federation.superlink.pid]
    assert outcome.status == COMPLETED
    metrics = round_metrics(outcome.output_dir)
    assert list(metrics.loc[1:, "participants"]) == [2, 2]
    ledger = pd.read_csv(outcome.output_dir / "ledger.csv")
    assert (ledger["status"] == "paid").sum() == 4
    for index in range(2):
        log = (tmp_path / "federation" / "logs" / f"trainer-{index}.log").read_text()
        answered = [line for line in log.splitlines() if "answered TRAIN for partition" in line]
        assert len(answered) == 2, log  # both rounds' TRAIN messages, none in the ClientApp
    assert all_gone(pids)
    assert not any(psutil.pid_exists(p) for p in pids)
    assert not any(s.parent.exists() for s in sockets if s is not None)
