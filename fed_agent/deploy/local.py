"""A whole federation on loopback: TLS SuperLink with SuperNode auth, N SuperNodes, one run.

:func:`local_federation` brings the processes up (bounded waits at every step) and always
stops exactly the processes it started, by PID, with their descendants. :func:`run_experiment`
submits the FedAgent app to any TLS connection and checks the run's final status, because
``flwr run`` itself exits 0 even when the ServerApp fails.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fed_agent.config import ExperimentConfig, load_config, run_config_file
from fed_agent.config.load import split_overrides
from fed_agent.deploy.certs import NodeKey, TlsFiles, generate_node_keys, generate_tls
from fed_agent.deploy.flwr_cli import (
    COMPLETED,
    DeploymentError,
    register_supernode,
    start_run,
    wait_finished,
    wait_online,
    write_connection,
)
from fed_agent.deploy.launcher import (
    PROJECT_ROOT,
    RunOutcome,
    check_contracts,
    check_data,
    check_resume_from,
    default_cache_dir,
    effective_overrides,
    flower_env,
    free_port,
    stop_process_tree,
)
from fed_agent.deploy.nodes import Scalar, node_config
from fed_agent.deploy.processes import (
    SuperLinkSpec,
    SuperNodeSpec,
    start_superlink,
    start_supernode,
    start_warm_trainer,
    stop_warm_trainer,
)
from fed_agent.protocol import WARM_TRAINER

log = logging.getLogger(__name__)
CONNECTION = "fedagent"
DEFAULT_WORKDIR = PROJECT_ROOT / ".flwr" / "deploy"
NODES_ONLINE_TIMEOUT_S = 120.0


@dataclass
class SuperNodeProcess:
    """A SuperNode this federation started."""

    partition_id: int
    process: subprocess.Popen
    node_id: int | None
    """The id its key was registered under (None for an unregistered node)."""
    console: Path
    trainer: subprocess.Popen | None = None
    """Its warm trainer (``clients/warm_trainer.py``), if it has one."""
    trainer_socket: Path | None = None
    """The trainer's socket, in a private temporary folder removed at the end."""


@dataclass
class LocalFederation:
    """Handles to a running loopback federation (see :func:`local_federation`)."""

    workdir: Path
    env: dict[str, str]
    tls: TlsFiles
    port: int
    superlink: subprocess.Popen
    supernodes: list[SuperNodeProcess] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The SuperLink's ``host:port``."""
        return f"127.0.0.1:{self.port}"

    def add_supernode(
        self,
        partition_id: int,
        num_partitions: int,
        key: NodeKey | None,
        *,
        profile: Mapping[str, Scalar] | None = None,
        register: bool = True,
        ca_cert: Path | None = None,
        max_wait_time_s: float | None = None,
        warm_trainer: bool = False,
    ) -> SuperNodeProcess:
        """Start one more SuperNode, registering its key first unless ``register`` is False.

        ``ca_cert`` defaults to the federation's CA; tests pass a foreign one. With
        ``warm_trainer`` a warm trainer starts first and the node config names its socket.
        """
        node_id = (
            register_supernode(key.public_key, CONNECTION, self.env)
            if (register and key is not None)
            else None
        )
        index = len(self.supernodes)
        profile = dict(profile or {})
        trainer, socket = None, None
        if warm_trainer:
            log_file = self.workdir / "logs" / f"trainer-{index}.log"
            trainer, socket = start_warm_trainer(self.env, log_file)
            profile[WARM_TRAINER] = str(socket)
        spec = SuperNodeSpec(
            superlink=self.address,
            ca_cert=ca_cert or self.tls.ca_cert,
            private_key=key.private_key if key else None,
            node_config=node_config(
                partition_id, num_partitions, profile, key.private_key if key else None
            ),
            runtime_port=free_port(),
            max_wait_time_s=max_wait_time_s,
        )
        console = self.workdir / "logs" / f"supernode-{index}.log"
        try:
            process = start_supernode(spec, self.env, console)
        except BaseException:
            if trainer is not None and socket is not None:
                stop_warm_trainer(trainer, socket)
            raise
        node = SuperNodeProcess(partition_id, process, node_id, console, trainer, socket)
        self.supernodes.append(node)
        return node

    def stop(self) -> None:
        """Stop every process this federation started (SuperNodes first), by PID."""
        for node in self.supernodes:
            stop_process_tree(node.process)
            if node.trainer is not None and node.trainer_socket is not None:
                stop_warm_trainer(node.trainer, node.trainer_socket)
        stop_process_tree(self.superlink)


@contextmanager
def local_federation(
    num_nodes: int,
    workdir: Path = DEFAULT_WORKDIR,
    profiles: Sequence[Mapping[str, Scalar]] | None = None,
    online_timeout_s: float = NODES_ONLINE_TIMEOUT_S,
    warm_trainers: bool = False,
) -> Iterator[LocalFederation]:
    """A TLS + SuperNode-auth federation of ``num_nodes`` ESs on 127.0.0.1.

    Generates a CA, a server certificate and one key per node under ``workdir``, starts the
    SuperLink, registers the keys, starts the SuperNodes (node ``i`` holds partition ``i`` of
    ``num_nodes``, plus ``profiles[i]``; with ``warm_trainers`` each gets a warm trainer) and
    waits until all are online. On exit, normal or not, it stops exactly the processes it
    started.
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    if profiles is not None and len(profiles) != num_nodes:
        raise ValueError(f"{len(profiles)} profiles given for {num_nodes} nodes")
    workdir = workdir.resolve()
    tls = generate_tls(workdir / "tls")
    keys = generate_node_keys(workdir / "keys", num_nodes)
    port = free_port()
    flwr_home = workdir / "flwr-home"
    env = flower_env(flwr_home, port)
    write_connection(flwr_home, CONNECTION, f"127.0.0.1:{port}", tls.ca_cert)
    spec = SuperLinkSpec("127.0.0.1", port, tls, auth=True)
    started = time.perf_counter()
    federation = LocalFederation(
        workdir, env, tls, port, start_superlink(spec, env, workdir / "logs")
    )
    try:
        for i, key in enumerate(keys):
            federation.add_supernode(
                i,
                num_nodes,
                key,
                profile=profiles[i] if profiles else None,
                warm_trainer=warm_trainers,
            )
        node_ids = [n.node_id for n in federation.supernodes if n.node_id is not None]
        wait_online(node_ids, CONNECTION, env, online_timeout_s)
        log.info("federation of %d ESs up in %.1f s", num_nodes, time.perf_counter() - started)
        yield federation
    finally:
        federation.stop()


@dataclass(frozen=True)
class SubmittedRun:
    """A run submitted to a SuperLink, and where its outputs go."""

    run_id: int
    output_dir: Path


def checked_experiment(
    experiment: str, overrides: str | Sequence[str] = ()
) -> tuple[ExperimentConfig, list[str]]:
    """The config of a run to submit and its overrides with paths pinned absolute, after the
    checks that need no SuperLink: ``fed-agent deploy local`` calls it before it writes a
    certificate or starts a process, so a bad setting leaves nothing behind.

    Raises
    ------
    ConfigError
        A bad experiment, override, checkpoint to resume, data folder, or a market the
        contract policy cannot design on, in one line.
    """
    items = split_overrides(overrides)
    cfg = load_config(experiment, items)
    check_resume_from(cfg)
    check_data(cfg, simulation=False)
    check_contracts(cfg)
    return cfg, effective_overrides(items, cfg, default_cache_dir())


def submit_experiment(
    env: dict[str, str],
    experiment: str,
    overrides: str | Sequence[str] = (),
    connection: str = CONNECTION,
    app_dir: Path = PROJECT_ROOT,
) -> SubmittedRun:
    """Submit the FedAgent app as a run on a SuperLink connection (returns at once).

    The config is composed here first, so a bad experiment or override fails before a run
    exists; output, cache and input paths are pinned absolute (the apps run elsewhere).
    """
    cfg, items = checked_experiment(experiment, overrides)
    with run_config_file(experiment, items) as run_config:
        run_id = start_run(app_dir, connection, str(run_config), env)
    log.info("started run %d on %s", run_id, connection)
    return SubmittedRun(run_id, Path(cfg.output_dir).resolve() / cfg.run_name)


def run_experiment(
    env: dict[str, str],
    experiment: str,
    overrides: str | Sequence[str] = (),
    timeout_s: float = 3600.0,
    connection: str = CONNECTION,
    app_dir: Path = PROJECT_ROOT,
) -> RunOutcome:
    """Run the FedAgent app on a SuperLink connection and check its final status.

    Raises
    ------
    DeploymentError
        When the run is refused, does not finish within ``timeout_s``, or ends other than
        ``finished:completed`` (the message holds Flower's status details).
    """
    started = time.perf_counter()
    run = submit_experiment(env, experiment, overrides, connection, app_dir)
    status, details = wait_finished(run.run_id, connection, env, timeout_s)
    outcome = RunOutcome(run.run_id, status, details, time.perf_counter() - started, run.output_dir)
    if status != COMPLETED:
        raise DeploymentError(f"run {run.run_id} ended {status}: {details}")
    return outcome
