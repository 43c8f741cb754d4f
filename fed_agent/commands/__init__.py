"""Sub-commands of the ``fed-agent`` command line.

Each module in this package exposes ``register(subparsers)``, which adds one command
(with its own sub-commands) to the top-level parser. ``fed_agent.cli`` discovers them, so a
new command never edits the entry point.
"""
