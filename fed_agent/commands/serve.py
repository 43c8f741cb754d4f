"""``fed-agent serve AGENT_DIR``: the agent as an OpenAI-compatible HTTP endpoint at the edge.

Loads the agent (its bases from the machine's model cache, built once if missing), warms it
up with one request, then serves ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``
and ``/health`` with uvicorn until Ctrl-C. See docs/deployment.md, "Serving the agent".
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fed_agent.serving.config import ServingConfig

DEFAULTS = ServingConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command."""
    parser = subparsers.add_parser("serve", help="serve an agent over an OpenAI-compatible API")
    parser.add_argument("agent_dir", type=Path, help="an agent directory (manifest.json)")
    parser.add_argument("--host", default=DEFAULTS.host, help="interface to listen on")
    parser.add_argument("--port", type=int, default=DEFAULTS.port)
    parser.add_argument(
        "--model-name", default=None, help="the model id clients send (default: the folder name)"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULTS.max_queue,
        help="requests running or waiting at once; more get 503",
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes)
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULTS.body_timeout_s,
        help="seconds a client has to send its whole request body; later gets 408",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULTS.default_max_tokens,
        help="tokens decoded when a request names none",
    )
    parser.add_argument("--max-tokens-limit", type=int, default=DEFAULTS.max_tokens_limit)
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = ServingConfig(
            host=args.host,
            port=args.port,
            max_queue=args.max_queue,
            max_body_bytes=args.max_body_bytes,
            body_timeout_s=args.body_timeout,
            default_max_tokens=args.max_tokens,
            max_tokens_limit=args.max_tokens_limit,
        )
        from fed_agent.deploy.preflight import check_port_free

        check_port_free(cfg.host, cfg.port)
        server = _load(args.agent_dir, cfg, args.model_name)
    except (ValueError, OSError, RuntimeError) as err:  # a bad agent folder, port, setting
        logging.error("%s", err)
        return 2
    server.run()
    return 0


def _load(agent_dir: Path, cfg: ServingConfig, model_name: str | None):
    """A uvicorn server for the agent, loaded and warmed up."""
    import time

    import uvicorn

    from fed_agent.evaluation.deployment import load_timed
    from fed_agent.evaluation.evaluate_agent import agent_experiment
    from fed_agent.serving.app import create_app
    from fed_agent.serving.engine import AgentEngine

    experiment = agent_experiment(agent_dir)
    loaded = load_timed(agent_dir, experiment.seed)
    engine = AgentEngine(loaded.runtime, cfg.max_queue, experiment.data.image_size)
    name = model_name or Path(agent_dir).resolve().name
    start = time.perf_counter()
    if not engine.is_vision:  # one request first: the first calls in a process are slow
        for _ in loaded.runtime.stream(engine.request("warm up", None), cfg.default_max_tokens):
            pass
    logging.info(
        "agent %s (%s) loaded in %.2f s (base build %.1f s), warm-up %.2f s; serving on "
        "http://%s:%d/v1",
        name,
        " -> ".join(engine.chain),
        loaded.agent_s,
        loaded.build_s,
        time.perf_counter() - start,
        cfg.host,
        cfg.port,
    )
    app = create_app(engine, cfg, name)
    return uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="info"))
