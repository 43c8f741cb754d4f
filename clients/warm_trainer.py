"""A warm process that trains for one SuperNode's ClientApps (deployment only).

Flower 1.42's deployment engine starts a fresh ClientApp process for every message, and a
TRAIN process spends about 6 s importing the model stack (torch, transformers' model classes,
peft) for well under a second of smoke training: a round costs process starts, not work.
An ES's operator can run one warm trainer next to its SuperNode
(``fed-agent deploy supernode --warm-trainer``). The SuperNode's node config then names the
trainer's Unix socket (``warm-trainer``, ``fed_agent.protocol.WARM_TRAINER``), and the ClientApp's TRAIN handler hands the request
to it instead of importing torch itself. The trainer has imported everything once and keeps
the built module.

The ClientApp stays a plain Flower ClientApp and the protocol is unchanged. Without the key,
or when the trainer cannot be reached or runs other code, the ClientApp trains in its own
process as before, and a warning says why.

- **Who may connect:** the socket lives in a folder only its owner can enter, and every
  connection must prove the key in ``<socket>.key`` (mode 0600;
  ``multiprocessing.connection``'s HMAC challenge) before any data is read.
- **Code:** the trainer answers only a ClientApp whose ``fed_agent`` and ``clients`` sources
  hash to its own (:func:`code_digest`). A trainer started from another checkout than the
  run's app is refused, and the ClientApp trains itself.

Run: ``python -m clients.warm_trainer --socket /path/to/private/dir/trainer.sock``
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener
from pathlib import Path

import numpy as np

from fed_agent.protocol import AdapterState

log = logging.getLogger(__name__)
_PACKAGES = ("fed_agent", "clients")


@functools.cache
def code_digest() -> str:
    """SHA-256 over the Python sources of ``fed_agent`` and ``clients`` as this process sees
    them (relative path and content, in path order)."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for package in _PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def key_path(socket_path: str | Path) -> Path:
    """Where the trainer keeps the key a client must prove."""
    return Path(f"{socket_path}.key")


class TrainerUnavailable(RuntimeError):
    """The trainer cannot be reached or does not run this code: train in this process."""


def train_remotely(
    socket_path: str,
    run_config: Mapping[str, object],
    node_config: Mapping[str, object],
    config: Mapping[str, object],
    adapter: AdapterState,
) -> tuple[AdapterState | None, dict]:
    """Have the warm trainer at ``socket_path`` answer a TRAIN message.

    Returns what :meth:`clients.edge_server.EdgeServer.respond` returns (the reply as its
    dict). Raises :class:`TrainerUnavailable` when the caller should train itself, and
    ``RuntimeError`` naming the trainer's error when the training itself failed there (the
    same request would fail here too).
    """
    path = Path(socket_path)
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            raise TrainerUnavailable(f"{path} is not a socket")
        authkey = key_path(path).read_bytes()
        with Client(str(path), family="AF_UNIX", authkey=authkey) as connection:
            connection.send(
                {
                    "code": code_digest(),
                    "run_config": dict(run_config),
                    "node_config": dict(node_config),
                    "config": dict(config),
                    "adapter": adapter,
                }
            )
            answer = connection.recv()
    except TrainerUnavailable:
        raise
    except (OSError, EOFError, ValueError, AuthenticationError) as err:  # not running, bad key
        raise TrainerUnavailable(f"cannot reach the warm trainer at {path}: {err}") from err
    if answer.get("status") == "other-code":
        raise TrainerUnavailable(f"the warm trainer at {path} runs other code: {answer['detail']}")
    if answer.get("status") != "ok":
        raise RuntimeError(f"the warm trainer failed: {answer.get('detail', answer)}")
    return answer["adapter"], answer["reply"]


def _answer(request: Mapping) -> dict:
    """One request, answered as :meth:`EdgeServer.respond` would in a ClientApp process."""
    from clients.edge_server import EdgeServer
    from fed_agent.config import config_from_run_config
    from fed_agent.protocol import train_request

    if request.get("code") != code_digest():
        return {
            "status": "other-code",
            "detail": f"client {str(request.get('code'))[:12]}, trainer {code_digest()[:12]}",
        }
    es = EdgeServer.from_node_config(
        config_from_run_config(request["run_config"]), request["node_config"]
    )
    adapter = {k: np.asarray(v) for k, v in request["adapter"].items()}
    trained, reply = es.respond(train_request(request["config"]), adapter)
    log.info(
        "answered TRAIN for partition %d, round %d: %d steps in %.2f s",
        es.partition_id,
        reply.server_round,
        reply.train_steps,
        reply.train_wall_s,
    )
    return {"status": "ok", "adapter": trained, "reply": reply.to_dict()}


def serve(socket_path: Path) -> None:
    """Answer TRAIN requests on ``socket_path``, one at a time, until stopped. Creates the key
    file; refuses a socket folder others can enter."""
    folder = socket_path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder.stat().st_mode & 0o077:
        raise SystemExit(f"{folder}: the socket folder must be private (chmod 700)")
    socket_path.unlink(missing_ok=True)
    key = key_path(socket_path)
    key.unlink(missing_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    _warm_up()
    with Listener(str(socket_path), family="AF_UNIX", authkey=key.read_bytes()) as listener:
        log.info("warm trainer ready on %s (code %s)", socket_path, code_digest()[:12])
        while True:
            try:
                connection = listener.accept()
            except (OSError, EOFError, AuthenticationError) as err:  # a bad key, or gone
                log.warning("refused a connection: %s", err)
                continue
            with connection:
                try:
                    request = connection.recv()
                    try:
                        answer = _answer(request)
                    except Exception as err:  # noqa: BLE001 -- reported to the ClientApp
                        log.exception("training failed")
                        answer = {"status": "error", "detail": f"{type(err).__name__}: {err}"}
                    connection.send(answer)
                except (OSError, EOFError) as err:
                    log.warning("lost a client: %s", err)


def _warm_up() -> None:
    """Import the model stack now, not on the first round's request, and keep built modules."""
    import fed_agent.modules.adapter  # noqa: F401
    import fed_agent.modules.training  # noqa: F401
    from clients.edge_server import EdgeServer

    EdgeServer.keep_modules = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True, help="Unix socket path to serve")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        serve(args.socket.resolve())
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
