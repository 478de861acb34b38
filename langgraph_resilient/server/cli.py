"""``langgraph-resilient serve``: argument parsing and running uvicorn (imported lazily).

Every flag has a ``LANGGRAPH_RESILIENT_*`` variable; ``--config langgraph.json`` reads a
LangGraph project's ``graphs`` and ``env``. With ``--workers N > 1`` uvicorn starts N worker
processes, and prometheus-client's multiprocess mode makes ``/metrics`` cover all of them.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from langgraph_resilient.server.settings import (
    SETTINGS_ENV,
    ServerSettings,
    env,
    parse_graph_specs,
    read_api_keys,
    read_langgraph_json,
)

DEFAULT_PORT = 8123


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    """``serve``'s own flags (the connection flags are the command's common ones)."""
    serve.add_argument(
        "--graph",
        action="append",
        default=[],
        metavar="NAME=PATH:ATTR",
        help="a graph to serve: NAME=path/to/file.py:attr or NAME=package.module:attr "
        "(repeatable; env LANGGRAPH_RESILIENT_GRAPHS, comma-separated)",
    )
    serve.add_argument(
        "--config",
        default=env("CONFIG"),
        help="a langgraph.json: its 'graphs' and 'env' are used (env LANGGRAPH_RESILIENT_CONFIG)",
    )
    serve.add_argument("--host", default=env("HOST", "127.0.0.1"), help="bind address")
    serve.add_argument(
        "--port", type=int, default=int(env("PORT", str(DEFAULT_PORT)) or DEFAULT_PORT)
    )
    serve.add_argument(
        "--workers", type=int, default=int(env("WORKERS", "1") or 1), help="worker processes"
    )
    serve.add_argument(
        "--api-key-file",
        default=env("API_KEYS_FILE"),
        help="file with one accepted x-api-key per line (or env LANGGRAPH_RESILIENT_API_KEYS, "
        "comma-separated)",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow binding a non-loopback address without API keys",
    )
    serve.add_argument(
        "--max-body-bytes", type=int, default=int(env("MAX_BODY_BYTES", "10485760") or 0)
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="an origin allowed by CORS (repeatable; default: CORS off)",
    )
    serve.add_argument(
        "--drain-grace-s",
        type=float,
        default=float(env("DRAIN_GRACE_S", "30") or 30),
        help="after SIGTERM, seconds in-flight runs may take before they are stopped at a "
        "checkpoint boundary (default 30)",
    )
    serve.add_argument(
        "--enqueue-wait-s",
        type=float,
        default=float(env("ENQUEUE_WAIT_S", "60") or 60),
        help="how long an 'enqueue' run waits for a busy thread before 409 (default 60)",
    )
    serve.add_argument("--lease-ttl-s", type=float, default=float(env("LEASE_TTL_S", "30") or 30))
    serve.add_argument(
        "--pool-max-size",
        type=int,
        default=int(env("POOL_MAX_SIZE", "10") or 10),
        help="Postgres connections of the saver's pool (default 10; 5 or fewer: one writer)",
    )
    serve.add_argument(
        "--continue-on-disconnect",
        action="store_true",
        default=env("CONTINUE_ON_DISCONNECT", "") in ("1", "true", "yes"),
        help="let a run go on when its client disconnects (default: cancel it)",
    )
    serve.add_argument("--log-level", default=env("LOG_LEVEL", "info"))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_from_args(
    args: argparse.Namespace,
    *,
    postgres_url: str | None,
    redis_url: str | None,
    sqlite_path: str | None,
    prefix: str,
) -> ServerSettings:
    """The server settings from ``serve``'s flags, the environment and ``--config``, over
    the durable tier and Redis the command resolved."""
    graphs: dict[str, Any] = {}
    base_dir = os.getcwd()  # --graph paths are relative to the working directory
    if args.config:
        graphs, _, config_env = read_langgraph_json(args.config)
        for key, value in config_env.items():
            os.environ.setdefault(key, value)
    env_graphs = [g for g in (env("GRAPHS") or "").split(",") if g.strip()]
    graphs.update(parse_graph_specs(env_graphs + list(args.graph)))
    return ServerSettings(
        graphs=graphs,
        base_dir=base_dir,
        postgres_url=postgres_url,
        redis_url=redis_url,
        sqlite_path=sqlite_path,
        prefix=prefix,
        api_keys=read_api_keys(env("API_KEYS"), args.api_key_file),
        max_body_bytes=args.max_body_bytes,
        cors_origins=tuple(args.cors_origin),
        drain_grace_s=args.drain_grace_s,
        enqueue_wait_s=args.enqueue_wait_s,
        lease_ttl_s=args.lease_ttl_s,
        cancel_on_disconnect=not args.continue_on_disconnect,
        pool_max_size=args.pool_max_size,
    )


def run_serve(
    args: argparse.Namespace,
    *,
    postgres_url: str | None,
    redis_url: str | None,
    sqlite_path: str | None,
    prefix: str,
) -> int:
    """Run the server until SIGTERM/SIGINT (after draining); returns the exit code."""
    settings = settings_from_args(
        args,
        postgres_url=postgres_url,
        redis_url=redis_url,
        sqlite_path=sqlite_path,
        prefix=prefix,
    )
    if not settings.api_keys and not _is_loopback(args.host) and not args.insecure_no_auth:
        print(
            f"error: refusing to bind {args.host} without API keys: set "
            "LANGGRAPH_RESILIENT_API_KEYS or --api-key-file, or pass --insecure-no-auth",
            file=sys.stderr,
        )
        return 2
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    os.environ[SETTINGS_ENV] = settings.to_json()
    metrics_dir: str | None = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="lgr-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _run_uvicorn(args, settings)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_uvicorn(args: argparse.Namespace, settings: ServerSettings) -> int:
    import uvicorn

    config = uvicorn.Config(
        "langgraph_resilient.server.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level=args.log_level,
        # After the drain, connections still open get this long before they are closed.
        timeout_graceful_shutdown=10,
    )
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        # The supervisor forwards SIGTERM to every worker; each drains (the app's handler),
        # then uvicorn's own handler stops it.
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0

    class Server(uvicorn.Server):
        """uvicorn's server, exiting with 0 after a signal (uvicorn re-raises the signal
        once it stopped, which would make the exit status 143 after a clean drain)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    server = Server(config)
    server.run()
    return 0 if server.started else 1


__all__ = ["add_serve_arguments", "run_serve", "settings_from_args"]
