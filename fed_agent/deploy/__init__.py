"""Deployment-engine tooling: TLS certificates, SuperNode keys, SuperLink/SuperNode processes.

Everything here drives Flower through its command-line binaries (``flower-superlink``,
``flower-supernode``, ``flwr``) as subprocesses, so fed_agent never imports flwr.
"""
