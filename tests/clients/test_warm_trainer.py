"""The warm trainer answers a TRAIN message exactly as the ClientApp's own process would, and
the ClientApp trains itself whenever the trainer cannot be trusted or reached."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clients import warm_trainer
from clients.edge_server import EdgeServer
from clients.warm_trainer import TrainerUnavailable, train_remotely
from fed_agent.config import config_from_run_config
from fed_agent.protocol import WARM_TRAINER, TrainInstruction, train_request

ROOT = Path(__file__).resolve().parents[2]
RUN_CONFIG = {"experiment": "smoke", "overrides": ""}
NODE_CONFIG = {"partition-id": 1, "num-partitions": 3}


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """A real trainer process on a socket in a private folder; stopped by its PID."""
    folder = tmp_path_factory.mktemp("trainer")
    folder.chmod(0o700)
    socket = folder / "trainer.sock"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    log = (folder / "trainer.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "clients.warm_trainer", "--socket", str(socket)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not socket.exists():
        assert process.poll() is None, (folder / "trainer.log").read_text()
        assert time.monotonic() < deadline, "the trainer did not start in 120 s"
        time.sleep(0.2)
    yield socket
    process.terminate()
    process.wait(timeout=30)
    log.close()


def _instruction(smoke_module, nonce: int = 11, fingerprint: str | None = None) -> dict:
    return TrainInstruction(
        2, 3, fingerprint or smoke_module.base.fingerprint, 2.0, 1.0, nonce, 1
    ).to_dict()


def test_the_trainer_returns_what_this_process_would_have_trained(trainer, smoke_module):
    config = _instruction(smoke_module)
    adapter = smoke_module.initial_state
    remote, reply = train_remotely(str(trainer), RUN_CONFIG, NODE_CONFIG, config, adapter)
    es = EdgeServer.from_node_config(config_from_run_config(RUN_CONFIG), NODE_CONFIG)
    local, local_reply = es.respond(train_request(config), adapter)
    assert reply["nonce"] == 11 and reply["train-steps"] == 3
    assert {k: v for k, v in reply.items() if k != "train-wall-s"} == {
        k: v for k, v in local_reply.to_dict().items() if k != "train-wall-s"
    }
    assert list(remote) == list(local)
    for key in local:
        np.testing.assert_array_equal(remote[key], local[key])
    again, _ = train_remotely(str(trainer), RUN_CONFIG, NODE_CONFIG, config, adapter)
    for key in local:  # the kept module starts from the received adapter every time
        np.testing.assert_array_equal(again[key], local[key])


def test_an_error_in_training_there_is_an_error_here(trainer, smoke_module):
    config = _instruction(smoke_module, fingerprint="0" * 64)
    with pytest.raises(RuntimeError, match="warm trainer failed: AdapterError.*differs"):
        train_remotely(str(trainer), RUN_CONFIG, NODE_CONFIG, config, smoke_module.initial_state)


def test_a_trainer_of_other_code_is_not_used(trainer, smoke_module, monkeypatch):
    monkeypatch.setattr(warm_trainer, "code_digest", lambda: "f" * 64)
    with pytest.raises(TrainerUnavailable, match="runs other code"):
        train_remotely(
            str(trainer),
            RUN_CONFIG,
            NODE_CONFIG,
            _instruction(smoke_module),
            smoke_module.initial_state,
        )


def test_a_wrong_key_or_no_trainer_means_training_here(trainer, smoke_module, tmp_path):
    config, adapter = _instruction(smoke_module), smoke_module.initial_state
    with pytest.raises(TrainerUnavailable, match="cannot reach"):
        train_remotely(str(tmp_path / "none.sock"), RUN_CONFIG, NODE_CONFIG, config, adapter)
    key = warm_trainer.key_path(trainer)
    real = key.read_bytes()
    try:
        key.write_bytes(b"not the key")
        with pytest.raises(TrainerUnavailable, match="cannot reach"):
            train_remotely(str(trainer), RUN_CONFIG, NODE_CONFIG, config, adapter)
    finally:
        key.write_bytes(real)
    # the trainer survived the impostor and still answers
    _, reply = train_remotely(str(trainer), RUN_CONFIG, NODE_CONFIG, config, adapter)
    assert reply["nonce"] == 11


def _train_message(smoke_module, node_config: dict):
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from fed_agent.protocol import ARRAYS, CONFIG
    from strategies.records import adapter_to_record
    from tests.strategies.fake_grid import metadata

    content = RecordDict(
        {
            ARRAYS: adapter_to_record(smoke_module.initial_state),
            CONFIG: ConfigRecord(_instruction(smoke_module)),
        }
    )
    context = Context(
        run_id=1, node_id=7, state=RecordDict(), node_config=node_config, run_config=RUN_CONFIG
    )
    return Message(content=content, metadata=metadata(0, 7, "train", "m1")), context


def _handled(message, context):
    from clients.client_app import train
    from fed_agent.protocol import ARRAYS, METRICS
    from strategies.records import record_to_adapter
    from tests.strategies.fake_grid import set_task_identity

    set_task_identity(7)
    try:
        reply = train(message, context)
    finally:
        set_task_identity(0)
    return record_to_adapter(reply.content[ARRAYS]), dict(reply.content[METRICS])


def test_the_client_app_hands_train_to_the_trainer_and_falls_back_when_it_is_gone(
    trainer, smoke_module, tmp_path, caplog, monkeypatch
):
    """Same reply either way; the fallback says why. Proof the trainer did the work: with
    the trainer named, this process never imports the training code."""
    import logging

    from clients import edge_server

    message, context = _train_message(smoke_module, {**NODE_CONFIG, WARM_TRAINER: str(trainer)})

    def forbidden(*_args, **_kwargs):
        raise AssertionError("trained in the ClientApp process")

    monkeypatch.setattr(edge_server.EdgeServer, "_train", forbidden)
    remote, remote_metrics = _handled(message, context)
    monkeypatch.undo()
    gone = str(tmp_path / "gone.sock")
    message, context = _train_message(smoke_module, {**NODE_CONFIG, WARM_TRAINER: gone})
    with caplog.at_level(logging.WARNING, logger="clients"):
        local, local_metrics = _handled(message, context)
    assert "trains in this process: cannot reach the warm trainer" in caplog.text
    for key in local:
        np.testing.assert_array_equal(remote[key], local[key])
    remote_metrics.pop("train-wall-s"), local_metrics.pop("train-wall-s")
    assert remote_metrics == local_metrics
