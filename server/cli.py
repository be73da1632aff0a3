"""`dllm serve`: flags (environment variables give their defaults), the engine, uvicorn.

    dllm serve --model PATH --host 0.0.0.0 --port 8000 [--api-key KEY] [--max-num-seqs N] ...

Start: the model loads and one warm-up step runs before the port opens; a bad flag, a broken checkpoint
or an engine that cannot step ends the process with one line and status 2.

Shutdown (SIGTERM or Ctrl-C): the listening socket closes (new connections are refused), in-flight
requests get --drain-timeout seconds to finish; what is left then ends at once, even while a step is
still running (a stream with an error event and [DONE], a JSON request with a 503); the engine thread
gets 10 s more to finish its step, and the process ends by the signal it got (status 143 for SIGTERM,
130 for Ctrl-C), as uvicorn re-raises it.

A broken engine (a step failed and the warm-up request cannot step either, or the engine thread died)
turns /health to 503, fails the requests in flight, and shuts the server down with status 1, so that
Docker or Kubernetes restarts it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

import uvicorn

# Environment variable -> flag it gives the default for (a Docker image sets these).
ENV_DEFAULTS = {
    "DLLM_MODEL": "model",
    "DLLM_HOST": "host",
    "DLLM_PORT": "port",
    "DLLM_API_KEY": "api_key",
    "DLLM_SERVED_MODEL_NAME": "served_model_name",
    "DLLM_MAX_NUM_SEQS": "max_num_seqs",
    "DLLM_MAX_WAITING": "max_waiting",
    "DLLM_ALLOWED_HOSTS": "allowed_hosts",
    "DLLM_ALLOWED_ORIGINS": "allowed_origins",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.cli import add_engine_arguments, add_sampling_arguments

    add_engine_arguments(parser)
    add_sampling_arguments(parser)  # here: defaults for the fields a request leaves unset
    g = parser.add_argument_group("server")
    g.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for every interface)"
    )
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/*")
    g.add_argument(
        "--served-model-name",
        default=None,
        help="the name requests use as `model` (default: the checkpoint directory's name)",
    )
    g.add_argument(
        "--max-waiting", type=int, default=256, help="queued requests beyond --max-num-seqs; more get 429"
    )
    g.add_argument(
        "--request-timeout",
        type=float,
        default=600.0,
        help="seconds from arrival to the last block; 0: no limit (default 600)",
    )
    g.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="on shutdown, seconds in-flight requests get to finish (default 30)",
    )
    g.add_argument("--max-request-bytes", type=int, default=4 * 2**20, help="largest request body")
    g.add_argument(
        "--max-prompts-per-request",
        type=int,
        default=16,
        help="engine requests one request may make, prompts x n (default 16; each is a running request)",
    )
    g.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_http_arguments(parser)
    parser.set_defaults(**environment_defaults(parser))


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    """Connection limits and cross-site request protection."""
    g = parser.add_argument_group("connections and cross-site requests")
    g.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a connection gets to send a request's first line and headers, from its opening "
        "or its previous response; then it is closed (default 10)",
    )
    g.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="open connections or requests in progress beyond which requests get 503 (uvicorn's "
        "limit_concurrency; default: --max-num-seqs + --max-waiting + 64)",
    )
    g.add_argument(
        "--allowed-hosts",
        type=comma_list,
        default=None,
        metavar="H1,H2",
        help="without --api-key, the Host names /v1/* and /tokenize accept besides IP addresses "
        "(default: localhost; '*': any, e.g. behind a proxy that checks them)",
    )
    g.add_argument(
        "--allowed-origins",
        type=comma_list,
        default=[],
        metavar="O1,O2",
        help="browser origins allowed to call the API (CORS), e.g. https://app.example; '*': any "
        "(default: none)",
    )


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def environment_defaults(parser: argparse.ArgumentParser) -> dict:
    """DLLM_* variables converted by their flag's type; a bad value is blamed on the variable."""
    actions = {action.dest: action for action in parser._actions}
    values = {}
    for var, dest in ENV_DEFAULTS.items():
        text = os.environ.get(var)
        if not text:
            continue
        action = actions[dest]
        try:
            values[dest] = action.type(text) if action.type else text
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            parser.error(f"environment variable {var}={text!r} is not a valid {action.option_strings[0]}")
    return values


def run(args: argparse.Namespace) -> int:
    from engine.async_engine import AsyncEngine
    from engine.cli import apply_threads, engine_kwargs, sampling_params_from
    from engine.engine import EngineConfig
    from models.registry import DEMO_MODEL_DIR
    from server.app import build_app
    from server.config import ServerConfig
    from server.connections import header_deadline_protocol

    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be in [0, 65535]; got {args.port}")
    if args.max_waiting < 1:
        raise ValueError(f"--max-waiting must be >= 1; got {args.max_waiting}")
    max_connections = args.max_connections
    if max_connections is None:
        max_connections = args.max_num_seqs + args.max_waiting + 64
    if max_connections < 2:  # uvicorn counts the connection asking: 1 would refuse every request
        raise ValueError(f"--max-connections must be >= 2; got {max_connections}")
    if not args.header_timeout > 0:
        raise ValueError(f"--header-timeout must be > 0; got {args.header_timeout}")
    model_dir = Path(args.model) if args.model else DEMO_MODEL_DIR
    config = ServerConfig(
        served_model_name=args.served_model_name or model_dir.resolve().name,
        api_key=args.api_key,
        request_timeout_s=args.request_timeout or None,
        drain_timeout_s=args.drain_timeout,
        max_request_bytes=args.max_request_bytes,
        max_prompts_per_request=args.max_prompts_per_request,
        allowed_hosts=tuple(args.allowed_hosts or ("localhost",)),
        allowed_origins=tuple(args.allowed_origins),
        defaults=sampling_params_from(args),
    )
    engine_config = EngineConfig(model=model_dir, **engine_kwargs(args))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    threads = apply_threads(args)
    engine = AsyncEngine.from_config(engine_config, max_waiting=args.max_waiting)
    engine.engine.warm_up()
    app = build_app(engine, config)
    uv_config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=args.drain_timeout + 5,
        http=header_deadline_protocol(args.header_timeout),
        limit_concurrency=max_connections,
        access_log=False,  # the app logs each request once, with its X-Request-Id
    )
    logging.getLogger("dllm.server").info(
        "serving %s as %r on http://%s:%d/v1 (%d torch threads)",
        model_dir,
        config.served_model_name,
        args.host,
        args.port,
        threads,
    )
    server = DrainingServer(uv_config, engine, args.drain_timeout)
    server.run()
    return server.exit_status


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that drains the engine while uvicorn waits for open connections, so that
    requests still running at the drain deadline end with an error body instead of a cut connection
    (uvicorn's own graceful-shutdown timeout, a little longer, stays as the backstop); and that
    shuts down with exit status 1 once the engine has failed."""

    def __init__(self, config: uvicorn.Config, engine, drain_timeout: float):
        super().__init__(config)
        self.engine, self.drain_timeout = engine, drain_timeout
        self.exit_status = 0

    async def on_tick(self, counter: int) -> bool:
        if self.engine.failure is not None and self.exit_status == 0:
            logging.getLogger("dllm.server").error("engine failed: %s; shutting down", self.engine.failure)
            self.exit_status = 1
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets=None) -> None:
        drain = asyncio.ensure_future(self.engine.shutdown(drain_timeout=self.drain_timeout))
        await super().shutdown(sockets)
        await drain
