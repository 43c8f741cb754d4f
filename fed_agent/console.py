"""The project's log lines on the console of whatever process runs them.

Flower's ServerApp and simulation processes mirror their stdout and stderr into the run's log
(``flwr run --stream``, ``flwr log``), but only Flower's own logger has a handler there; the
project's INFO lines (held-out quality, rejected replies, the exported agent) would go nowhere.
:func:`show_project_logs` gives the project's package loggers one stderr handler.
"""

from __future__ import annotations

import logging
import sys

PROJECT_LOGGERS = ("fed_agent", "strategies", "clients")
FORMAT = "%(levelname)-8s: %(name)s: %(message)s"
_MARK = "_fed_agent_console"


class _StderrHandler(logging.StreamHandler):
    """Writes to the *current* ``sys.stderr`` (Flower may replace it after import)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def show_project_logs(level: int = logging.INFO) -> None:
    """Log the project's packages at ``level`` to stderr, once per process (idempotent)."""
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if any(getattr(h, _MARK, False) for h in logger.handlers):
            continue
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        setattr(handler, _MARK, True)
        logger.addHandler(handler)
        logger.setLevel(level)
