"""The ``langgraph-resilient`` command: ``demo``, ``migrate``, ``doctor``, ``prune``.

Connection settings come from flags or the environment (``LANGGRAPH_RESILIENT_POSTGRES_URL``,
``LANGGRAPH_RESILIENT_REDIS_URL``, ``LANGGRAPH_RESILIENT_SQLITE_PATH``,
``LANGGRAPH_RESILIENT_PREFIX``); with none, the embedded
SQLite default is used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from langgraph_resilient.checkpoint import ResilientSaver
from langgraph_resilient.checkpoint.schema import SCHEMA_VERSION
from langgraph_resilient.checkpoint.settings import default_sqlite_path, redact
from langgraph_resilient.errors import ResilientError


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LANGGRAPH_RESILIENT_POSTGRES_URL"),
        help="Postgres URL (env LANGGRAPH_RESILIENT_POSTGRES_URL); default: embedded SQLite",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("LANGGRAPH_RESILIENT_REDIS_URL"),
        help="Redis URL for the shared cache tier (env LANGGRAPH_RESILIENT_REDIS_URL); "
        "used with --postgres-url",
    )
    parser.add_argument(
        "--sqlite-path",
        default=None,
        help="SQLite file for the embedded tier (env LANGGRAPH_RESILIENT_SQLITE_PATH, "
        "default ./langgraph_state.db)",
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("LANGGRAPH_RESILIENT_PREFIX", "lgr_"),
        help="table prefix (env LANGGRAPH_RESILIENT_PREFIX, default lgr_)",
    )


def _saver_kwargs(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"prefix": args.prefix, **extra}
    if args.postgres_url:
        kwargs["postgres_url"] = args.postgres_url
        if args.redis_url:
            kwargs["redis_url"] = args.redis_url
    else:
        kwargs["sqlite_path"] = args.sqlite_path or default_sqlite_path()
    return kwargs


def _where(args: argparse.Namespace) -> str:
    if args.postgres_url:
        cache = f" + redis {redact(args.redis_url)}" if args.redis_url else ""
        return f"postgres {redact(args.postgres_url)}{cache}"
    return f"sqlite {os.path.abspath(args.sqlite_path or default_sqlite_path())}"


def cmd_demo(args: argparse.Namespace) -> int:
    from langgraph_resilient.demo import run_demo

    print(f"durable tier: {_where(args)} (prefix {args.prefix!r})")
    run_demo(lambda: ResilientSaver.from_urls(**_saver_kwargs(args)), thread_id=args.thread)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    async def migrate() -> int:
        saver = ResilientSaver.from_urls(**_saver_kwargs(args, migrate_on_enter=False))
        await saver.store.open()
        try:
            before = await saver.store.schema_version()
            after = await saver.store.migrate()
        finally:
            await saver.store.close()
        print(f"{_where(args)}: schema version {before} -> {after}")
        from langgraph_resilient.server.threads import migrate_thread_store

        print(await migrate_thread_store(args.postgres_url, args.sqlite_path, args.prefix))
        return 0

    return asyncio.run(migrate())


def cmd_doctor(args: argparse.Namespace) -> int:
    problems: list[str] = []

    async def check() -> None:
        saver = ResilientSaver.from_urls(**_saver_kwargs(args, migrate_on_enter=False))
        print(f"durable tier: {_where(args)}")
        settings = getattr(saver.store, "settings", None)
        if settings is not None:
            print(
                f"  pool: min={settings.min_size} max={settings.max_size} "
                f"connect_timeout={settings.connect_timeout_s}s "
                f"command_timeout={settings.command_timeout_s}s pgbouncer={settings.pgbouncer}"
            )
            if "sslmode" not in settings.url and "127.0.0.1" not in settings.url:
                problems.append("no sslmode in the Postgres URL of a remote host")
        try:
            await saver.store.open()
        except ResilientError as exc:
            problems.append(str(exc))
            return
        try:
            version = await saver.store.schema_version()
            print(f"  connected; schema version {version} (this release: {SCHEMA_VERSION})")
            if version < SCHEMA_VERSION:
                problems.append("schema not migrated: run `langgraph-resilient migrate`")
            elif version > SCHEMA_VERSION:
                problems.append("database schema is newer than this release: upgrade it")
        finally:
            await saver.store.close()

    try:
        asyncio.run(check())
    except ResilientError as exc:
        problems.append(str(exc))
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``30d`` or ``2w`` as a duration."""
    number, unit = text[:-1], text[-1:].lower()
    if unit not in _UNITS or not number.replace(".", "", 1).isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 90s, 15m, 12h, 30d or 2w")
    return timedelta(seconds=float(number) * _UNITS[unit])


def cmd_prune(args: argparse.Namespace) -> int:
    async def prune() -> int:
        saver = ResilientSaver.from_urls(**_saver_kwargs(args, migrate_on_enter=False))
        async with saver:
            return await saver.aprune_older_than(
                args.older_than, strategy=args.strategy, batch_size=args.batch_size
            )

    count = asyncio.run(prune())
    print(
        f"{_where(args)}: pruned {count} thread(s) idle for more than {args.older_than} "
        f"(strategy {args.strategy})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``langgraph-resilient`` command."""
    parser = argparse.ArgumentParser(
        prog="langgraph-resilient", description="Resilient LangGraph checkpointer tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo graph (interrupt, stop, resume)")
    _add_connection_args(demo)
    demo.add_argument("--thread", default="demo", help="thread id to run (default: demo)")
    demo.set_defaults(func=cmd_demo)
    migrate = sub.add_parser("migrate", help="create or upgrade the schema")
    _add_connection_args(migrate)
    migrate.set_defaults(func=cmd_migrate)
    doctor = sub.add_parser("doctor", help="check connectivity, schema and settings")
    _add_connection_args(doctor)
    doctor.set_defaults(func=cmd_doctor)
    prune = sub.add_parser(
        "prune", help="retention: prune threads whose newest checkpoint is older than an age"
    )
    _add_connection_args(prune)
    prune.add_argument(
        "--older-than", required=True, type=parse_age, help="age such as 30d, 12h, 2w"
    )
    prune.add_argument(
        "--strategy",
        choices=("delete", "keep_latest"),
        default="delete",
        help="delete the threads (default) or keep only their newest checkpoints",
    )
    prune.add_argument("--batch-size", type=int, default=500, help="threads per batch")
    prune.set_defaults(func=cmd_prune)
    from langgraph_resilient.server.cli import add_serve_parser  # no FastAPI import until run

    add_serve_parser(sub, _add_connection_args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``langgraph-resilient`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ResilientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
