"""The contract model stays numpy/scipy only."""

from __future__ import annotations

import subprocess
import sys


def test_contracts_import_neither_torch_nor_flwr() -> None:
    code = (
        "import sys, fed_agent.contracts, fed_agent.latency, fed_agent.commands.contract\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'flwr'})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
