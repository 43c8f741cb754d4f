"""``fed-agent deploy``: the deployment engine (TLS SuperLink, authenticated SuperNodes).

Sub-commands, in the order a real deployment uses them (docs/deployment.md):

- ``certs``: a CA, a SuperLink certificate for the given hosts, SuperNode key pairs;
- ``superlink``: run a SuperLink with TLS and SuperNode authentication (foreground);
- ``register``: register SuperNode public keys on it;
- ``supernode``: run one ES's SuperNode with its partition and private profile (foreground);
- ``run``: run an experiment on the SuperLink and check its final status;
- ``local``: all of the above on 127.0.0.1 in one command, stopping what it started.

Every sub-command checks its inputs before it starts anything (``fed_agent.deploy.preflight``:
certificate and key files exist and parse, ports are free, the database folder exists or is
created, the SuperLink answers over TLS) and reports an operator's mistake in one line, never a
traceback: exit code 2 for a bad input, 1 for a step that failed (a child process that exits
is reported with the last error line of its log).
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from pathlib import Path

from fed_agent.config import experiment_names
from fed_agent.validation import number_option

DEFAULT_PORT = 9092
"""The SuperLink's single HTTPS port (Fleet, Control and Runtime APIs in Flower 1.42)."""
DEFAULT_HOME = Path(".flwr") / "deploy" / "flwr-home"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``deploy`` and its sub-commands to the top-level parser."""
    parser = subparsers.add_parser("deploy", help="deployment engine: TLS, node auth, runs")
    commands = parser.add_subparsers(dest="deploy_command", required=True, metavar="COMMAND")

    certs = commands.add_parser("certs", help="generate a CA, a SuperLink cert, SuperNode keys")
    certs.add_argument("--out", type=Path, required=True)
    certs.add_argument(
        "--host",
        action="append",
        default=None,
        help="SuperLink address or DNS name for the certificate (repeatable; "
        "default 127.0.0.1 and localhost)",
    )
    certs.add_argument(
        "--num-keys",
        type=number_option(0, integer=True),
        default=0,
        help="SuperNode key pairs to write",
    )
    certs.set_defaults(handler=_operator_errors(_certs))

    link = commands.add_parser("superlink", help="run a TLS SuperLink (foreground)")
    link.add_argument("--certs", type=Path, required=True, help="folder written by `certs`")
    link.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    link.add_argument("--port", type=int, default=DEFAULT_PORT)
    link.add_argument("--no-auth", action="store_true", help="accept unregistered SuperNodes")
    link.add_argument("--database", type=Path, default=None, help="SQLite state file")
    link.add_argument("--log-dir", type=Path, default=Path(".flwr") / "deploy" / "logs")
    link.set_defaults(handler=_operator_errors(_superlink))

    reg = commands.add_parser("register", help="register SuperNode public keys")
    _connection_args(reg)
    reg.add_argument("public_keys", nargs="+", type=Path)
    reg.set_defaults(handler=_operator_errors(_register))

    node = commands.add_parser("supernode", help="run one ES's SuperNode (foreground)")
    node.add_argument("--superlink", required=True, help="SuperLink host:port")
    node.add_argument("--ca", type=Path, required=True, help="CA certificate (ca.crt)")
    node.add_argument("--key", type=Path, required=True, help="this node's private key")
    node.add_argument("--partition-id", type=number_option(0, integer=True), required=True)
    node.add_argument("--num-partitions", type=number_option(1, integer=True), required=True)
    node.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="YAML mapping of private node-config keys (e.g. willingness-type)",
    )
    node.add_argument(
        "--node-config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra node-config pairs (override the profile)",
    )
    node.add_argument(
        "--data-path",
        type=Path,
        default=None,
        help="this ES's own data folder (data.source=files; docs/data.md): node config "
        "data-path, read only on this machine",
    )
    node.add_argument("--port", type=int, default=9094, help="local Runtime API port")
    node.add_argument(
        "--max-wait-time-s",
        type=number_option(0, ends="()"),
        default=None,
        help="give up reconnecting after this long (default: retry forever)",
    )
    node.add_argument(
        "--warm-trainer",
        action="store_true",
        help="run a warm trainer beside the SuperNode: TRAIN messages skip the ~6 s model-stack "
        "import of a fresh ClientApp process (clients/warm_trainer.py)",
    )
    node.set_defaults(handler=_operator_errors(_supernode))

    run = commands.add_parser("run", help="run an experiment on a SuperLink, check its status")
    _connection_args(run)
    _experiment_args(run)
    run.set_defaults(handler=_operator_errors(_run))

    local = commands.add_parser("local", help="TLS + auth federation on 127.0.0.1, one run")
    local.add_argument("--num-nodes", type=number_option(1, integer=True), default=3)
    local.add_argument("--workdir", type=Path, default=Path(".flwr") / "deploy" / "local")
    local.add_argument(
        "--profile",
        type=Path,
        action="append",
        default=None,
        help="per-node profile YAML, once per node in order",
    )
    local.add_argument(
        "--warm-trainers", action="store_true", help="a warm trainer beside every SuperNode"
    )
    _experiment_args(local)
    local.set_defaults(handler=_operator_errors(_local))


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--superlink", required=True, help="SuperLink host:port")
    parser.add_argument("--ca", type=Path, required=True, help="CA certificate (ca.crt)")
    parser.add_argument(
        "--flwr-home",
        type=Path,
        default=DEFAULT_HOME,
        help="project-local Flower CLI home (its config.toml is rewritten)",
    )


def _experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", default="default", choices=experiment_names())
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. federation.num_rounds=2"
    )
    parser.add_argument(
        "--timeout-s", type=number_option(0, ends="()"), default=3600.0, help="bound on the run"
    )


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _one_line(message: str) -> str:
    """A possibly multi-line error (a CLI's output) as its first line and its cause."""
    from fed_agent.deploy.processes import error_line

    head, _, rest = message.strip().partition("\n")
    return head if not rest.strip() else f"{head.rstrip(': ')}: {error_line(rest)}"


def _operator_errors(
    handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Report a bad input (exit 2) or a failed step (exit 1) in one line, not a traceback."""

    @functools.wraps(handler)
    def checked(args: argparse.Namespace) -> int:
        from fed_agent.deploy.launcher import FederationRunError

        _logging()
        try:
            return handler(args)
        except FederationRunError as err:  # a step failed: a CLI call, a process, a run
            logging.error("%s", _one_line(str(err)))
            return 1
        except (ValueError, OSError) as err:  # PreflightError, ConfigError, a bad profile, ...
            logging.error("%s", _one_line(str(err)))
            return 2

    return checked


def _served(name: str, process, logs: tuple[Path, ...]) -> int:
    """Wait for a foreground child; when it fails, report its last error line."""
    from fed_agent.deploy.processes import last_error_line, serve

    code = serve(process)
    if code:
        logging.error(
            "%s exited with code %d: %s (log %s)", name, code, last_error_line(*logs), logs[-1]
        )
    return code


def _connection_env(args: argparse.Namespace) -> dict[str, str]:
    """The flwr CLI's environment for ``--superlink``, after checking a SuperLink answers there
    over TLS with a certificate ``--ca`` verifies."""
    from fed_agent.deploy.flwr_cli import write_connection
    from fed_agent.deploy.launcher import flower_env
    from fed_agent.deploy.local import CONNECTION
    from fed_agent.deploy.preflight import check_superlink, parse_address

    _, port = parse_address(args.superlink)
    check_superlink(args.superlink, args.ca)
    home = args.flwr_home.resolve()
    write_connection(home, CONNECTION, args.superlink, args.ca.resolve())
    return flower_env(home, port)


def _certs(args: argparse.Namespace) -> int:
    from fed_agent.deploy.certs import DEFAULT_HOSTS, generate_node_keys, generate_tls

    tls = generate_tls(args.out, args.host or DEFAULT_HOSTS)
    print(f"CA {tls.ca_cert}\nSuperLink certificate {tls.server_cert}, key {tls.server_key}")
    if args.num_keys:
        for key in generate_node_keys(args.out / "keys", args.num_keys):
            print(f"SuperNode key {key.private_key} (register {key.public_key})")
    return 0


def _superlink(args: argparse.Namespace) -> int:
    from fed_agent.deploy.certs import TlsFiles
    from fed_agent.deploy.launcher import flower_env
    from fed_agent.deploy.preflight import (
        PreflightError,
        check_certificate,
        check_port_free,
        check_tls_key,
        prepare_database,
    )
    from fed_agent.deploy.processes import SuperLinkSpec, start_superlink

    tls = TlsFiles(args.certs / "ca.crt", args.certs / "server.pem", args.certs / "server.key")
    missing = [str(p) for p in (tls.ca_cert, tls.server_cert, tls.server_key) if not p.is_file()]
    if missing:
        raise PreflightError(
            f"--certs {args.certs}: TLS files missing {missing} (run `fed-agent deploy certs`)"
        )
    check_certificate(tls.ca_cert, "CA certificate")
    check_tls_key(tls.server_key, check_certificate(tls.server_cert, "server certificate"), "key")
    check_port_free(args.host, args.port)
    database = prepare_database(args.database) if args.database else None
    spec = SuperLinkSpec(args.host, args.port, tls, auth=not args.no_auth, database=database)
    env = flower_env(DEFAULT_HOME.resolve(), args.port)
    log_dir = args.log_dir.resolve()
    process = start_superlink(spec, env, log_dir)
    logging.info(
        "SuperLink up on %s:%d (TLS, auth %s); logs in %s",
        args.host,
        args.port,
        "on" if spec.auth else "off",
        args.log_dir,
    )
    logs = (log_dir / "superlink.log", log_dir / "superlink.out")
    return _served("flower-superlink", process, logs)


def _register(args: argparse.Namespace) -> int:
    from fed_agent.deploy.flwr_cli import register_supernode
    from fed_agent.deploy.local import CONNECTION
    from fed_agent.deploy.preflight import check_node_public_key

    for key in args.public_keys:
        check_node_public_key(key)
    env = _connection_env(args)
    for key in args.public_keys:
        print(f"{key}: node id {register_supernode(key, CONNECTION, env)}")
    return 0


def _supernode(args: argparse.Namespace) -> int:
    from fed_agent.data.sources import DATA_PATH
    from fed_agent.deploy.launcher import flower_env
    from fed_agent.deploy.nodes import load_profile, node_config, parse_pairs
    from fed_agent.deploy.preflight import (
        PreflightError,
        UntrustedSuperLink,
        check_certificate,
        check_identity_key,
        check_node_private_key,
        check_port_free,
        check_superlink,
        parse_address,
    )
    from fed_agent.deploy.processes import (
        SuperNodeSpec,
        start_supernode,
        start_warm_trainer,
        stop_warm_trainer,
    )
    from fed_agent.protocol import IDENTITY_KEY, WARM_TRAINER

    parse_address(args.superlink)
    check_certificate(args.ca, "--ca")
    check_node_private_key(args.key)
    check_port_free("127.0.0.1", args.port)
    if args.profile and not args.profile.is_file():
        raise PreflightError(f"--profile {args.profile}: no such file")
    try:
        check_superlink(args.superlink, args.ca)
    except UntrustedSuperLink:
        raise  # retrying would never help
    except PreflightError as err:  # not up yet, perhaps: a SuperNode retries until it is
        logging.warning("%s; the SuperNode will keep retrying", err)
    profile = load_profile(args.profile) if args.profile else {}
    profile.update(parse_pairs(args.node_config))
    if args.data_path is not None:
        profile[DATA_PATH] = str(_data_folder(args.data_path))
    if IDENTITY_KEY in profile:  # another key than the SuperNode's proves the ES's identity
        check_identity_key(Path(str(profile[IDENTITY_KEY])), IDENTITY_KEY)
    env = flower_env(DEFAULT_HOME.resolve(), args.port)
    logs = Path(".flwr") / "deploy" / "logs"
    trainer, socket = None, None
    if args.warm_trainer:
        log_file = (logs / f"trainer-{args.partition_id}.log").resolve()
        trainer, socket = start_warm_trainer(env, log_file)
        profile[WARM_TRAINER] = str(socket)
        logging.info("warm trainer on %s; log %s", socket, log_file)
    spec = SuperNodeSpec(
        superlink=args.superlink,
        ca_cert=args.ca.resolve(),
        private_key=args.key.resolve(),
        node_config=node_config(args.partition_id, args.num_partitions, profile, args.key),
        runtime_port=args.port,
        max_wait_time_s=args.max_wait_time_s,
    )
    console = logs / f"supernode-{args.partition_id}.log"
    try:
        process = start_supernode(spec, env, console.resolve())
        logging.info("SuperNode for partition %d started; log %s", args.partition_id, console)
        return _served("flower-supernode", process, (console.resolve(),))
    finally:
        if trainer is not None and socket is not None:
            stop_warm_trainer(trainer, socket)


def _data_folder(path: Path) -> Path:
    """The ES's data folder, absolute; a missing one is refused (exit 2). Broken contents are
    only warned about: the ES then declines every offer with the reason, which the cloud's
    ledger records (docs/data.md)."""
    from fed_agent.data.files import find_problems
    from fed_agent.deploy.preflight import PreflightError

    if not path.is_dir():
        raise PreflightError(f"--data-path {path}: no such folder")
    count, problems = find_problems(path, limit=1)
    if problems:
        logging.warning("--data-path: %s; this ES will decline every offer", problems[0])
    else:
        logging.info("--data-path %s: %d records, all valid", path, count)
    return path.resolve()


def _report(outcome) -> None:
    print(
        f"run {outcome.run_id} {outcome.status} in {outcome.wall_s:.1f} s; outputs in "
        f"{outcome.output_dir}"
    )


def _run(args: argparse.Namespace) -> int:
    from fed_agent.config import ConfigError
    from fed_agent.deploy.launcher import FederationRunError
    from fed_agent.deploy.local import checked_experiment, run_experiment

    _logging()
    try:
        checked_experiment(args.experiment, args.overrides)  # before the connection is written
        _report(
            run_experiment(_connection_env(args), args.experiment, args.overrides, args.timeout_s)
        )
    except ConfigError as err:  # refused before a run is submitted
        logging.error("bad config: %s", err)
        return 2
    except FederationRunError as err:
        logging.error("%s", err)
        return 1
    return 0


def _local(args: argparse.Namespace) -> int:
    from fed_agent.deploy.launcher import FederationRunError
    from fed_agent.deploy.local import checked_experiment, local_federation, run_experiment
    from fed_agent.deploy.nodes import load_profile

    _logging()
    profiles = [load_profile(p) for p in args.profile] if args.profile else None
    checked_experiment(args.experiment, args.overrides)  # before any certificate or process
    try:
        with local_federation(
            args.num_nodes, args.workdir, profiles, warm_trainers=args.warm_trainers
        ) as federation:
            _report(run_experiment(federation.env, args.experiment, args.overrides, args.timeout_s))
    except FederationRunError as err:
        logging.error("%s", err)
        return 1
    return 0
