"""The ``flwr`` CLI against a TLS SuperLink: connection config, node registration, runs.

Every call runs the CLI of this environment with a bounded timeout and raises
:class:`DeploymentError` on failure, with the CLI's own message.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from fed_agent.deploy.launcher import FederationRunError, flower_bin, run_status

CLI_TIMEOUT_S = 300.0
"""One CLI call (a cold ``flwr`` start takes several seconds on a quiet 2-core box, and more
than 120 s, ``flwr run`` with its bundling, on a shared one at load average 20-30)."""
FINISHED = "finished:"
COMPLETED = "finished:completed"


class DeploymentError(FederationRunError):
    """A deployment step failed (a process did not start, a CLI call was refused, ...)."""


def write_connection(
    flwr_home: Path, name: str, address: str, ca_cert: Path | None, insecure: bool = False
) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one default SuperLink connection ``name``.

    The file is the CLI's own (project-local through ``FLWR_HOME``): TLS is verified against
    ``ca_cert``; ``insecure`` is only for a SuperLink started with ``--insecure``.
    """
    if ca_cert is None and not insecure:
        raise ValueError("a TLS connection needs the CA certificate (or insecure=True)")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"connection name {name!r} must be letters, digits, '-' or '_'")
    flwr_home.mkdir(parents=True, exist_ok=True)
    security = "insecure = true" if insecure else f"root-certificates = {json.dumps(str(ca_cert))}"
    path = flwr_home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
        f"address = {json.dumps(address)}\n{security}\n"
    )
    return path


def flwr(
    args: Sequence[str], env: dict[str, str], timeout_s: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """Run ``flwr <args>``; raise DeploymentError on a non-zero exit or a timeout."""
    try:
        done = subprocess.run(
            [flower_bin("flwr"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise DeploymentError(f"flwr {' '.join(args[:2])} timed out after {timeout_s} s") from err
    if done.returncode != 0:
        raise DeploymentError(
            f"flwr {' '.join(args[:2])} failed ({done.returncode}): "
            f"{(done.stdout + done.stderr).strip()[-2000:]}"
        )
    return done


def _json(done: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as err:
        raise DeploymentError(f"flwr printed no JSON: {done.stdout or done.stderr}") from err


def register_supernode(public_key: Path, connection: str, env: dict[str, str]) -> int:
    """Register a SuperNode's public key on the SuperLink; return the node id it gets."""
    reply = _json(
        flwr(["supernode", "register", str(public_key), connection, "--format", "json"], env)
    )
    if not reply.get("success"):
        raise DeploymentError(f"registering {public_key} failed: {reply}")
    return int(reply["node-id"])


def list_supernodes(connection: str, env: dict[str, str]) -> dict[int, str]:
    """Node id -> status (``registered``, ``online``, ``offline``, ...) of every SuperNode."""
    reply = _json(flwr(["supernode", "list", connection, "--format", "json"], env))
    return {int(n["node-id"]): str(n["status"]) for n in reply.get("nodes", [])}


def wait_online(
    node_ids: Sequence[int], connection: str, env: dict[str, str], timeout_s: float
) -> None:
    """Wait until every node in ``node_ids`` is online; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            statuses = list_supernodes(connection, env)
        except DeploymentError:  # a CLI call that timed out on a busy machine: ask again
            if time.monotonic() >= deadline:
                raise
            continue
        missing = [n for n in node_ids if statuses.get(n) != "online"]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise DeploymentError(
                f"SuperNodes not online after {timeout_s:.0f} s: "
                f"{ {n: statuses.get(n, 'unknown') for n in missing} }"
            )
        time.sleep(1.0)


def start_run(app_dir: Path, connection: str, run_config: str, env: dict[str, str]) -> int:
    """Submit the Flower app in ``app_dir`` as a run (not streamed); return its run id."""
    reply = _json(
        flwr(["run", str(app_dir), connection, "--run-config", run_config, "--format", "json"], env)
    )
    if not reply.get("success") or "run-id" not in reply:
        raise DeploymentError(f"flwr run was refused: {reply}")
    return int(reply["run-id"])


def wait_finished(
    run_id: int, connection: str, env: dict[str, str], timeout_s: float, poll_s: float = 5.0
) -> tuple[str, str]:
    """Poll the run until its status is ``finished:*``; return (status, details).

    A status read that fails (``flwr list`` slow to answer on a busy machine) is retried until
    the deadline. Raises DeploymentError after ``timeout_s`` (the caller stops the run's
    processes).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, status, details = run_status(env, connection, run_id)
        except FederationRunError as err:
            if time.monotonic() >= deadline:
                raise DeploymentError(f"run {run_id}: {err} (after {timeout_s:.0f} s)") from err
            time.sleep(poll_s)
            continue
        if status.startswith(FINISHED):
            return status, details
        if time.monotonic() >= deadline:
            raise DeploymentError(f"run {run_id} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)
