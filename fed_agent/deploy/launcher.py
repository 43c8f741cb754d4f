"""Launch a Flower simulation of the federation with the ``flwr`` CLI, and check its outcome.

This module starts its own simulation SuperLink (so it knows the PID it must stop), points
``flwr run`` at it, reads the run's final status (``flwr run`` exits 0 even when the ServerApp
fails) and always stops the SuperLink it started. It talks to Flower only through the CLI, so
fed_agent stays free of flwr imports.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from fed_agent.cache import default_cache_dir
from fed_agent.config import (
    ConfigError,
    ExperimentConfig,
    hydra_quoted,
    load_config,
    run_config_file,
)
from fed_agent.config.load import CONFIG_DIR, split_overrides
from fed_agent.config.schema import FederationConfig

log = logging.getLogger(__name__)
PROJECT_ROOT = CONFIG_DIR.parent
FLWR_CONFIG = """[superlink]
default = "local"

[superlink.local]
address = ":local:"
"""


class FederationRunError(RuntimeError):
    """The federated run did not finish as completed."""


@dataclass(frozen=True)
class RunOutcome:
    """What a launched run ended as."""

    run_id: int
    status: str
    details: str
    wall_s: float
    output_dir: Path


def free_port() -> int:
    """A loopback TCP port that is free now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flower_bin(name: str) -> str:
    """An executable of this environment (the venv's flwr, not one on PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


SUPEREXEC_POLL_S = 0.1
"""How often a SuperExec looks for a new task (a message to start a ClientApp for, a run to
start a ServerApp for); Flower's default is 1 s (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``)."""


def flower_env(flwr_home: Path, http_port: int) -> dict[str, str]:
    """Environment for every flwr process: project-local home, no runtime installs, offline,
    SuperExecs that start a task within :data:`SUPEREXEC_POLL_S` (unless the caller set it)."""
    env = os.environ.copy()
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", f"{SUPEREXEC_POLL_S:g}")
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
        FLWR_LOCAL_CONTROL_API_PORT=str(http_port),  # 1.42 serves every API on one port
        HF_HUB_OFFLINE="1",
        # the SuperLink spawns flower-superexec / flwr-simulation by name: this venv's first
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def wait_healthy(
    port: int,
    process: subprocess.Popen,
    timeout_s: float,
    ca_cert: Path | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Poll the SuperLink's ``/health`` until it answers; raise if it exits or times out.

    With ``ca_cert`` the probe uses HTTPS and verifies the server certificate against it.
    """
    scheme, context = "http", None
    if ca_cert is not None:
        scheme, context = "https", ssl.create_default_context(cafile=str(ca_cert))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FederationRunError(f"flower-superlink exited with code {process.returncode}")
        try:
            url = f"{scheme}://{host}:{port}/health"
            with urllib.request.urlopen(url, timeout=1, context=context):
                return
        except OSError:
            time.sleep(0.5)
    raise FederationRunError(f"flower-superlink not healthy on port {port} after {timeout_s} s")


def start_simulation_superlink(
    flwr_home: Path, env: dict[str, str], http_port: int
) -> subprocess.Popen:
    """Start a simulation SuperLink in its own process group; the caller stops it."""
    runtime = flwr_home / f"superlink-{http_port}"
    shutil.rmtree(runtime, ignore_errors=True)
    runtime.mkdir(parents=True)
    command = [
        flower_bin("flower-superlink"),
        "--insecure",
        "--simulation",
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
        "--host",
        "127.0.0.1",
        "--port",
        str(http_port),
        "--database",
        str(runtime / "state.db"),
        "--log-file",
        str(runtime / "superlink.log"),
    ]
    console = (runtime / "console.log").open("w")
    process = subprocess.Popen(
        command,
        env=env,
        stdout=console,
        stderr=subprocess.STDOUT,
    )
    wait_healthy(http_port, process, timeout_s=60)
    return process


def stop_process_tree(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a process we started and its descendants, by PID (SIGTERM, then SIGKILL).

    The SuperLink detaches its SuperExec into another session, so a process-group kill
    would miss it; the descendants are collected by PID before the SuperLink goes.
    """
    if process.poll() is not None:
        return
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        child.kill()


STATUS_TIMEOUT_S = 60.0
"""One ``flwr list`` call (a cold CLI start takes seconds on a busy 2-core box)."""


def run_status(
    env: dict[str, str], connection: str = "local", run_id: int | None = None
) -> tuple[int, str, str]:
    """Run id, status and status details of run ``run_id`` on the SuperLink ``connection``, or
    of its newest run (the latest submitted: run ids are random, not increasing).

    Raises :class:`FederationRunError` when the status cannot be read (also when ``flwr list``
    does not answer within :data:`STATUS_TIMEOUT_S`, e.g. on a very busy machine).
    """
    try:
        listed = subprocess.run(
            [flower_bin("flwr"), "list", connection, "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=STATUS_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise FederationRunError(f"flwr list gave no answer within {STATUS_TIMEOUT_S:g} s") from err
    try:
        runs = json.loads(listed.stdout)["runs"]
        if run_id is None:
            run = max(runs, key=lambda r: (str(r.get("pending-at") or ""), int(r["run-id"])))
        else:
            run = next(r for r in runs if int(r["run-id"]) == run_id)
    except StopIteration as err:
        raise FederationRunError(f"run {run_id} is not listed by the SuperLink") from err
    except (json.JSONDecodeError, KeyError, ValueError) as err:
        raise FederationRunError(
            f"cannot read the run status: {listed.stdout or listed.stderr}"
        ) from err
    return int(run["run-id"]), str(run["status"]), str(run.get("status-details", ""))


PINNED_PATHS = (
    "agent.extend",
    "federation.resume_from",
    "data.path",
    "data.eval_path",
    "data.cloud_path",
    "incentive.designer_checkpoint",
)
"""Path fields resolved against the launcher's working directory (the apps run elsewhere)."""


def pinned_paths(cfg: ExperimentConfig) -> dict[str, Path]:
    """The :data:`PINNED_PATHS` of ``cfg`` that are set, and a ``model=hf`` base's
    ``model.path`` that names a local folder, resolved against the working directory, by
    dotted key: the values the apps read."""
    pinned = {}
    for key in PINNED_PATHS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value:
            pinned[key] = Path(value).expanduser().resolve()
    local = Path(cfg.model.path).expanduser()  # model=hf: a local folder, else a hub id
    if cfg.model.name == "hf" and cfg.model.path and local.is_dir():
        pinned["model.path"] = local.resolve()
    return pinned


def effective_overrides(
    cfg_overrides: list[str], cfg: ExperimentConfig, cache_dir: Path
) -> list[str]:
    """Pin absolute output, cache and input paths: the apps run in other working directories.

    ``cfg`` is the config composed from ``cfg_overrides``; its :data:`PINNED_PATHS` that are set
    (an experiment file may set them too) are resolved here.
    """
    pinned = pinned_paths(cfg)
    keys = {o.split("=", 1)[0] for o in cfg_overrides}
    kept = [o for o in cfg_overrides if o.split("=", 1)[0] not in pinned]
    extra = [f"{key}={hydra_quoted(str(path))}" for key, path in pinned.items()]
    if "output_dir" not in keys:
        extra.append(f"output_dir={hydra_quoted(str(Path(cfg.output_dir).resolve()))}")
    if "model.cache_dir" not in keys:
        extra.append(f"model.cache_dir={hydra_quoted(str(cache_dir))}")
    return [*kept, *extra]


def check_resume_from(cfg: ExperimentConfig) -> None:
    """Refuse, before anything starts, a ``federation.resume_from`` that cannot be resumed.

    The checkpoint's config is compared with the one the apps read: with the
    :data:`PINNED_PATHS` resolved (an ``agent.extend`` or data folder given relative to the
    working directory is recorded absolute).

    Raises
    ------
    ConfigError
        One line naming the file: no checkpoint there, none intact, or one written under
        another config (with the mismatching fields).
    """
    from fed_agent.checkpoints import CheckpointError, resume_point  # torch: lazily

    apps_cfg = copy.deepcopy(cfg)  # load_config's cached object stays as it is
    for key, path in pinned_paths(cfg).items():
        section, name = key.split(".")
        setattr(getattr(apps_cfg, section), name, str(path))
    try:
        resume_point(apps_cfg)
    except (FileNotFoundError, CheckpointError) as err:
        raise ConfigError(f"federation.resume_from: {err}") from err


def check_data(cfg: ExperimentConfig, simulation: bool) -> None:
    """Refuse, before anything starts, a ``data.source=files`` run with a broken folder: every
    ES folder of a simulation (``<data.path>/<partition-id>``, in a deployment each SuperNode
    names its own) and the cloud's held-out and reference folders, every line and image.

    Raises
    ------
    ConfigError
        One line naming the file and the line of the first problem.
    """
    from fed_agent.data.files import DataFileError
    from fed_agent.data.sources import check_run_data

    if cfg.data.source != "files":
        return
    if simulation and not cfg.data.path:
        raise ConfigError(
            "data.source=files in a simulation needs data.path: a folder holding one data "
            "folder per ES, named by its partition id (docs/data.md)"
        )
    try:
        check_run_data(cfg.data, cfg.federation.num_es if simulation else None)
    except DataFileError as err:
        raise ConfigError(f"data: {err}") from err


def check_model(cfg: ExperimentConfig) -> None:
    """Refuse, before anything starts, a base this machine cannot load (``model.path``, the
    device, bitsandbytes: ``fed_agent.models.preflight``).

    Raises
    ------
    ConfigError
        One line naming the setting and what to do.
    """
    from fed_agent.models.base import ModelLoadError
    from fed_agent.models.preflight import check_model as check_base

    try:
        check_base(cfg.model)
    except ModelLoadError as err:
        raise ConfigError(str(err)) from err


def check_output_dir(cfg: ExperimentConfig) -> None:
    """Refuse, before anything starts, an ``output_dir`` where the run folder cannot be made
    (under a file, read-only): the ServerApp would fail only after the SuperLink, the
    SuperNodes and the base were up.

    Raises
    ------
    ConfigError
        One line naming ``output_dir`` and the folder that is not writable.
    """
    from fed_agent.errors import UserError
    from fed_agent.outputs import check_output_path  # pandas: lazily

    try:
        check_output_path(Path(cfg.output_dir).expanduser() / cfg.run_name, "output_dir")
    except UserError as err:
        raise ConfigError(str(err)) from err


def check_contracts(cfg: ExperimentConfig) -> None:
    """Refuse, before anything starts, a contract policy that does not load (a corrupt
    ``incentive.designer_checkpoint``, or one for another K) or that cannot design a contract
    on the configured market (:func:`fed_agent.incentives.policies.check_designable`; the
    ServerApp checks both again before its run folder moves).

    Raises
    ------
    ConfigError
        One line naming the file or the failure.
    """
    if cfg.incentive.policy == "none":
        return
    from fed_agent.contracts import Market
    from fed_agent.incentives.policies import check_designable, make_policy

    try:
        policy = make_policy(cfg.incentive, cfg.market.num_types, cfg.market.commitment)
        check_designable(policy, Market.from_params(cfg.market))
    except ValueError as err:  # CheckpointFileError, another K, or no contract designable
        raise ConfigError(str(err)) from err


def check_extend(cfg: ExperimentConfig) -> None:
    """Refuse, before anything starts, an ``agent.extend`` that is no agent to extend (the
    ServerApp loads its modules before its first round and would fail there).

    Raises
    ------
    ConfigError
        One line naming the folder.
    """
    if not cfg.agent.extend:
        return
    from fed_agent.packaging.extend import ExtendError, extension_specs  # torch: lazily

    try:
        extension_specs(cfg.agent)
    except ExtendError as err:
        raise ConfigError(str(err)) from err


def check_simulation(experiment: str, overrides: str | Sequence[str] = ()) -> ExperimentConfig:
    """The config of a simulation run after every check that needs no process: the config,
    ``federation.resume_from``, the data folders, the base, the contract policy on the market,
    ``agent.extend`` and ``output_dir``.

    Raises
    ------
    ConfigError
        The first problem, in one line.
    """
    cfg: ExperimentConfig = load_config(experiment, split_overrides(overrides))
    check_resume_from(cfg)
    check_data(cfg, simulation=True)
    check_model(cfg)
    check_contracts(cfg)
    check_extend(cfg)
    check_output_dir(cfg)
    return cfg


def federation_config(fed: FederationConfig) -> str:
    """Flower's ``--federation-config`` of a simulation: SuperNodes and per-ClientApp resources
    (``federation.client_cpus``; ``federation.client_gpus`` when above 0)."""
    text = f"num-supernodes={fed.num_es} client-resources-num-cpus={fed.client_cpus:g}"
    if fed.client_gpus > 0:
        text += f" client-resources-num-gpus={fed.client_gpus:g}"
    return text


def launch_simulation(
    experiment: str, overrides: str | list[str] = (), timeout_s: float = 3600
) -> RunOutcome:
    """Run ``experiment`` as a Flower simulation and return its outcome.

    Raises
    ------
    FederationRunError
        When the run does not end ``finished:completed`` (the details name the failure) or
        does not finish within ``timeout_s``.
    """
    items = split_overrides(overrides)
    cfg = check_simulation(experiment, items)  # fail fast, before any process starts
    items = effective_overrides(items, cfg, default_cache_dir())
    flwr_home = PROJECT_ROOT / ".flwr"
    flwr_home.mkdir(exist_ok=True)
    (flwr_home / "config.toml").write_text(FLWR_CONFIG)
    http_port = free_port()
    env = flower_env(flwr_home, http_port)
    start = time.perf_counter()
    superlink = start_simulation_superlink(flwr_home, env, http_port)
    try:
        fed = cfg.federation
        with run_config_file(experiment, items) as run_config:
            command = [
                flower_bin("flwr"),
                "run",
                str(PROJECT_ROOT),
                "local",
                "--stream",
                "--federation-config",
                federation_config(fed),
                "--run-config",
                str(run_config),
            ]
            try:
                subprocess.run(command, env=env, timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired as err:  # the SuperLink stops with the run
                raise FederationRunError(
                    f"the run did not finish within {timeout_s:g} s (--timeout-s); stopped, its "
                    f"outputs so far are in {Path(cfg.output_dir).resolve() / cfg.run_name}"
                ) from err
        run_id, status, details = run_status(env)
    finally:
        stop_process_tree(superlink)
    outcome = RunOutcome(
        run_id,
        status,
        details,
        time.perf_counter() - start,
        Path(cfg.output_dir).resolve() / cfg.run_name,
    )
    if status != "finished:completed":
        raise FederationRunError(f"run {run_id} ended {status}: {details}")
    return outcome
