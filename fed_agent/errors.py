"""Which exceptions are the user's to fix: ``fed-agent`` prints them as one line and exits 2.

A bad path, a bad file or a bad setting is reported without a traceback; anything else is a
bug in this project and keeps its traceback (``fed_agent.cli``).
"""

from __future__ import annotations

import errno
import sys

USER_ERROR_CLASSES = (
    "fed_agent.errors.UserError",
    "fed_agent.config.load.ConfigError",
    "fed_agent.modules.adapter.AdapterError",
    "fed_agent.models.base.ModelLoadError",
    "fed_agent.checkpoints.CheckpointError",
    "fed_agent.data.files.DataFileError",
    "fed_agent.deploy.preflight.PreflightError",
    "fed_agent.evaluation.serving.EndpointError",
    "fed_agent.rl.checkpoint.CheckpointFileError",
)
"""The project's exceptions about its input (an agent folder, a config, a checkpoint, a data
folder, an endpoint, a designer checkpoint), by dotted name: looked up among the modules already imported, so the
command line imports no torch to recognise them (an exception of a class whose module was
never imported cannot have been raised)."""
FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
"""A path named on the command line or in a config that is missing, taken or not writable."""
FILE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.ENAMETOOLONG, errno.ELOOP})
"""Other OSErrors of a path: read-only file system, disk full, name too long, link loop."""


class UserError(Exception):
    """Input that the person running a command got wrong, said in one line."""


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is about the user's input (see the module docstring), not a bug."""
    if isinstance(err, FILE_ERRORS) or (isinstance(err, OSError) and err.errno in FILE_ERRNOS):
        return True
    for dotted in USER_ERROR_CLASSES:
        module, _, name = dotted.rpartition(".")
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return True
    return False


def one_line_message(err: BaseException) -> str:
    """The whole message of ``err`` on one line (its lines joined), or its class name."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines) or type(err).__name__
