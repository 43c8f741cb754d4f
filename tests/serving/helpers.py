"""Running `fed-agent serve` as a real process in a test."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fed_agent.deploy.launcher import free_port
from fed_agent.evaluation.serving import Endpoint


@contextlib.contextmanager
def running_server(agent_dir: Path, *options: str) -> Iterator[int]:
    """``fed-agent serve agent_dir`` on a free loopback port (its port); stopped by PID."""
    port = free_port()
    log_path = agent_dir.parent / f"serve-{port}.log"
    command = [sys.executable, "-m", "fed_agent.cli", "serve", str(agent_dir), "--port", str(port)]
    with log_path.open("w") as log:
        process = subprocess.Popen([*command, *options], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    Endpoint.probe(f"http://127.0.0.1:{port}")
                    break
                except RuntimeError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        tail = log_path.read_text()[-2000:]
                        raise AssertionError(f"the server did not come up:\n{tail}") from None
                    time.sleep(0.5)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
