"""The deployment engine end to end on 127.0.0.1: TLS, SuperNode auth, a dead SuperNode.

Each test starts its own SuperLink and SuperNodes through ``fed_agent.deploy`` and stops
exactly those processes by PID. Run them with ``pytest -m deploy tests/deploy`` (minutes on
a 2-core box; see docs/deployment.md for measured times).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import psutil
import pytest

from fed_agent.deploy.certs import generate_node_key, generate_tls
from fed_agent.deploy.flwr_cli import COMPLETED, list_supernodes, wait_finished
from fed_agent.deploy.local import (
    CONNECTION,
    local_federation,
    run_experiment,
    submit_experiment,
)
from tests.deploy.helpers import (
    all_gone,
    kill_tree,
    round_metrics,
    running_clientapp,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.deploy]
EXPERIMENT = "smoke"


def _overrides(out: Path, *extra: str) -> list[str]:
    return [f"output_dir={out}", *extra]


def _started_pids(federation) -> list[int]:
    pids = [federation.superlink.pid]
    for node in federation.supernodes:
        pids.append(node.process.pid)
    for pid in list(pids):
        try:
            pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return pids


@pytest.mark.timeout(1500)
def test_three_supernodes_over_tls_with_auth_complete_a_two_round_run(tmp_path: Path) -> None:
    with local_federation(3, tmp_path / "federation") as federation:
        outcome = run_experiment(
            federation.env,
            EXPERIMENT,
            _overrides(tmp_path / "out", "federation.min_available_es=3"),
            timeout_s=1200,
        )
        pids = _started_pids(federation)
    assert outcome.status == COMPLETED
    metrics = round_metrics(outcome.output_dir)
    assert metrics.loc[1, "participants"] == 3 and metrics.loc[2, "participants"] == 3
    ledger = pd.read_csv(outcome.output_dir / "ledger.csv")
    assert (ledger["status"] == "paid").sum() == 6 and (ledger["status"] == "rejected").sum() == 0
    assert all_gone(pids)


@pytest.mark.timeout(1500)
def test_a_supernode_killed_mid_round_costs_only_its_reply(tmp_path: Path) -> None:
    """F1: the round waits (bounded) for the dead node's error reply, then aggregates the rest."""
    overrides = _overrides(
        tmp_path / "out", "federation.min_available_es=2", "federation.round_timeout_s=300"
    )
    with local_federation(3, tmp_path / "federation") as federation:
        run = submit_experiment(federation.env, EXPERIMENT, overrides)
        victim = federation.supernodes[2]
        wait_until(lambda: running_clientapp(victim.process.pid), 300, "round 1 training")
        kill_tree(victim.process.pid)
        status, details = wait_finished(run.run_id, CONNECTION, federation.env, timeout_s=1200)
    assert status == COMPLETED, details
    metrics = round_metrics(run.output_dir)
    # the dead node costs only itself: killed while answering the cloud's profile or offer
    # query it is never offered or chosen (no ledger row); killed while training its reply is
    # missing or an error (a rejected or no_reply row). Either way it is not paid, and the two
    # others are.
    assert metrics.loc[1, "participants"] == 2
    ledger = pd.read_csv(run.output_dir / "ledger.csv")
    first = ledger[ledger["round"] == 1]
    assert (first["status"] == "paid").sum() == 2
    unpaid = first[first["status"] != "paid"]
    assert (unpaid["paid"] == 0).all()
    assert set(unpaid["status"]) <= {"rejected", "no_reply"}
    assert ledger.loc[ledger["status"] == "paid", "node_id"].nunique() == 2
    assert metrics.loc[2, "participants"] == 2


@pytest.fixture(scope="module")
def one_node_federation(tmp_path_factory):
    """A TLS + auth SuperLink with one registered, online SuperNode."""
    with local_federation(1, tmp_path_factory.mktemp("federation")) as federation:
        yield federation


@pytest.mark.timeout(300)
def test_a_supernode_whose_key_is_not_registered_is_refused(one_node_federation) -> None:
    federation = one_node_federation
    before = list_supernodes(CONNECTION, federation.env)
    stranger = generate_node_key(federation.workdir / "strangers", "unregistered")
    node = federation.add_supernode(0, 1, stranger, register=False, max_wait_time_s=20)
    wait_until(lambda: node.process.poll() is not None, 120, "the refused SuperNode to exit")
    assert node.process.returncode != 0
    assert list_supernodes(CONNECTION, federation.env) == before  # never got a node id
    log = node.console.read_text()
    # flwr exits with SUPERNODE_CONNECTION_ERROR and the SuperLink's refusal (HTTP 401)
    assert "Failed to initialize the connection" in log or "401" in log, log


@pytest.mark.timeout(300)
def test_a_supernode_trusting_another_ca_cannot_connect(
    one_node_federation, tmp_path: Path
) -> None:
    federation = one_node_federation
    foreign = generate_tls(tmp_path / "foreign-ca")
    key = generate_node_key(tmp_path / "keys", "wrong-ca")
    node = federation.add_supernode(0, 1, key, ca_cert=foreign.ca_cert, max_wait_time_s=20)
    wait_until(lambda: node.process.poll() is not None, 120, "the wrong-CA SuperNode to exit")
    assert list_supernodes(CONNECTION, federation.env)[node.node_id] != "online"
    assert "CERTIFICATE_VERIFY_FAILED" in node.console.read_text()
    # and plain HTTP gets no HTTP answer from the TLS port
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{federation.address}/health", timeout=5)
