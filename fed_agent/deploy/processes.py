"""Start a TLS SuperLink and SuperNodes as subprocesses; the caller stops them by PID.

Flags follow Flower 1.42 (docs/deployment.md, section 1): one HTTPS port per SuperLink for
the Fleet, Control and Runtime APIs (``--host/--port``), server-side TLS
(``--ssl-certfile/--ssl-keyfile/--ssl-ca-certfile``), SuperNode authentication
(``--enable-supernode-auth`` + ``--auth-supernode-private-key``), runtime dependency
installation off everywhere.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fed_agent.deploy.certs import TlsFiles
from fed_agent.deploy.flwr_cli import DeploymentError
from fed_agent.deploy.launcher import (
    PROJECT_ROOT,
    FederationRunError,
    flower_bin,
    stop_process_tree,
    wait_healthy,
)
from fed_agent.deploy.nodes import Scalar, node_config_arg

SUPERLINK_START_TIMEOUT_S = 90.0
WARM_TRAINER_START_TIMEOUT_S = 120.0
"""A warm trainer imports the whole model stack before its socket appears."""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")
_ERROR = re.compile(r"\b(ERROR|CRITICAL|FATAL|CERTIFICATE_VERIFY_FAILED)\b")
_NOT_THE_CAUSE = re.compile(r"^(SystemExit|KeyboardInterrupt)\b|^Exception ignored in")


def error_line(text: str) -> str:
    """The line of a log that says what went wrong, for a one-line report.

    The last exception line (the end of the last traceback), else the last line flagged
    ERROR/CRITICAL, else the last non-empty line; colour codes removed. A traceback's cause is
    preferred to uvicorn's closing "Application startup failed".
    """
    lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not _NOT_THE_CAUSE.search(line)]
    for pattern in (_EXCEPTION, _ERROR):
        found = [line for line in lines if pattern.search(line)]
        if found:
            return found[-1]
    return lines[-1] if lines else "(the log is empty)"


def last_error_line(*logs: Path) -> str:
    """:func:`error_line` over ``logs`` read in order (missing ones are skipped)."""
    text = "\n".join(p.read_text(errors="replace") for p in logs if p.is_file())
    return error_line(text)


@dataclass(frozen=True)
class SuperLinkSpec:
    """How to start a SuperLink."""

    host: str
    port: int
    tls: TlsFiles | None
    """None = ``--insecure`` (plain HTTP); only for local debugging."""
    auth: bool = True
    database: Path | None = None
    """SQLite file that keeps nodes and runs over a restart; None = in memory."""

    def command(self, log_file: Path) -> list[str]:
        """The ``flower-superlink`` command line."""
        command = [
            flower_bin("flower-superlink"),
            "--disable-runtime-dependency-installation",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--log-file",
            str(log_file),
        ]
        if self.tls is None:
            command.append("--insecure")
        else:
            command += [
                "--ssl-ca-certfile",
                str(self.tls.ca_cert),
                "--ssl-certfile",
                str(self.tls.server_cert),
                "--ssl-keyfile",
                str(self.tls.server_key),
            ]
        if self.auth:
            command.append("--enable-supernode-auth")
        if self.database is not None:
            command += ["--database", str(self.database)]
        return command


@dataclass(frozen=True)
class SuperNodeSpec:
    """How to start one SuperNode (one ES)."""

    superlink: str
    """``host:port`` of the SuperLink's Fleet API."""
    ca_cert: Path | None
    """CA that signed the SuperLink's certificate; None = ``--insecure``."""
    private_key: Path | None
    """The node's ECDSA authentication key; None when the SuperLink runs without auth."""
    node_config: Mapping[str, Scalar]
    runtime_port: int
    """The node's local Runtime API port (distinct per node on one host)."""
    max_wait_time_s: float | None = None
    """Give up reconnecting after this long (None = retry forever, Flower's default)."""

    def command(self) -> list[str]:
        """The ``flower-supernode`` command line."""
        command = [
            flower_bin("flower-supernode"),
            "--superlink",
            self.superlink,
            "--node-config",
            node_config_arg(self.node_config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.runtime_port),
        ]
        if self.ca_cert is None:
            command.append("--insecure")
        else:
            command += ["--root-certificates", str(self.ca_cert)]
        if self.private_key is not None:
            command += ["--auth-supernode-private-key", str(self.private_key)]
        if self.max_wait_time_s is not None:
            command += ["--max-wait-time", f"{self.max_wait_time_s:g}"]
        return command


def _spawn(
    command: list[str], env: dict[str, str], console: Path, cwd: Path | None = None
) -> subprocess.Popen:
    console.parent.mkdir(parents=True, exist_ok=True)
    with console.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def start_superlink(
    spec: SuperLinkSpec,
    env: dict[str, str],
    log_dir: Path,
    timeout_s: float = SUPERLINK_START_TIMEOUT_S,
) -> subprocess.Popen:
    """Start the SuperLink and wait (bounded) until its ``/health`` answers over TLS.

    Raises
    ------
    DeploymentError
        When it exits or is not healthy in time; the message ends with the last error line of
        its logs (``superlink.out``, ``superlink.log`` in ``log_dir``).
    """
    console, log_file = log_dir / "superlink.out", log_dir / "superlink.log"
    process = _spawn(spec.command(log_file), env, console)
    probe_host = "127.0.0.1" if spec.host in ("0.0.0.0", "::") else spec.host
    try:
        wait_healthy(
            spec.port, process, timeout_s, spec.tls.ca_cert if spec.tls else None, probe_host
        )
    except FederationRunError as err:
        process.kill()
        process.wait()
        raise DeploymentError(f"{err}: {last_error_line(console, log_file)}") from err
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def start_supernode(spec: SuperNodeSpec, env: dict[str, str], console: Path) -> subprocess.Popen:
    """Start a SuperNode; it connects (and retries) in the background."""
    return _spawn(spec.command(), env, console)


def stop_warm_trainer(process: subprocess.Popen, socket: Path) -> None:
    """Stop a warm trainer by PID and remove its socket folder."""
    stop_process_tree(process)
    shutil.rmtree(socket.parent, ignore_errors=True)


def start_warm_trainer(
    env: dict[str, str],
    console: Path,
    timeout_s: float = WARM_TRAINER_START_TIMEOUT_S,
) -> tuple[subprocess.Popen, Path]:
    """Start a warm trainer (``clients/warm_trainer.py``) and wait (bounded) until it listens.

    Its socket is in a new private temporary folder (mode 700): a short path (a Unix socket
    path is limited to ~100 bytes) free of spaces (a node-config value may not hold them).
    Returns the process and the socket (the node config's ``warm-trainer``).

    Raises
    ------
    DeploymentError
        When it exits or does not listen in time, with the last error line of its log (the
        folder is removed then).
    """
    socket = Path(tempfile.mkdtemp(prefix="fedagent-trainer-")) / "trainer.sock"
    command = [sys.executable, "-m", "clients.warm_trainer", "--socket", str(socket)]
    process = _spawn(command, env, console, cwd=PROJECT_ROOT)
    deadline = time.monotonic() + timeout_s
    while not socket.is_socket():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_warm_trainer(process, socket)
            raise DeploymentError(
                f"the warm trainer on {socket} did not start: {last_error_line(console)}"
            )
        time.sleep(0.2)
    return process, socket


def serve(process: subprocess.Popen) -> int:
    """Wait for a foreground service; on Ctrl-C or SIGTERM stop it (and its children)."""

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return process.wait()
    except KeyboardInterrupt:
        stop_process_tree(process)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
