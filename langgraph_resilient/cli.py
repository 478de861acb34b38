"""The ``langgraph-resilient`` command: ``demo``, ``migrate``, ``doctor``, ``prune``.

Connection settings come from flags or the environment (``LANGGRAPH_RESILIENT_POSTGRES_URL``,
``LANGGRAPH_RESILIENT_REDIS_URL``, ``LANGGRAPH_RESILIENT_SQLITE_PATH``,
``LANGGRAPH_RESILIENT_PREFIX``). Without a Postgres URL the durable tier is the embedded SQLite
file; a Redis URL adds the Redis tier in front of either.

Subcommands are registered in one place, :data:`COMMANDS`. Each command imports what it needs
(LangGraph, the saver) when it runs, so ``--help`` and ``--version`` stay fast.

Exit status: 0 done, 1 the command ran and failed (a tier unreachable, a problem found by
``doctor``), 2 bad input (flags, URLs, settings).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from langgraph_resilient import __version__
from langgraph_resilient.errors import ConfigurationError, ResilientError

if TYPE_CHECKING:
    from langgraph_resilient.checkpoint import ResilientSaver

ENV_POSTGRES_URL = "LANGGRAPH_RESILIENT_POSTGRES_URL"
ENV_REDIS_URL = "LANGGRAPH_RESILIENT_REDIS_URL"
ENV_SQLITE_PATH = "LANGGRAPH_RESILIENT_SQLITE_PATH"
ENV_PREFIX = "LANGGRAPH_RESILIENT_PREFIX"


class UsageError(Exception):
    """Bad flags or environment: printed with the command's name, exit status 2."""


# --------------------------------------------------------------------------- connection


@dataclass(frozen=True, slots=True)
class Connection:
    """Where a command's saver lives, resolved from flags and the environment."""

    postgres_url: str | None
    """The durable tier when set; else ``sqlite_path`` is."""
    sqlite_path: str | None
    redis_url: str | None
    """The Redis tier in front of the durable tier (Postgres or SQLite), when set."""
    prefix: str

    def saver_kwargs(self, **extra: Any) -> dict[str, Any]:
        """``ResilientSaver.from_urls`` arguments for this connection."""
        kwargs: dict[str, Any] = {"prefix": self.prefix, **extra}
        if self.postgres_url is not None:
            kwargs["postgres_url"] = self.postgres_url
        else:
            kwargs["sqlite_path"] = self.sqlite_path
        if self.redis_url is not None:
            kwargs["redis_url"] = self.redis_url
        return kwargs

    def describe(self) -> str:
        """The tiers, as the ``durable tier:`` line prints them (passwords masked)."""
        from langgraph_resilient._urls import redact

        if self.postgres_url is not None:
            where = f"postgres {redact(self.postgres_url)}"
        else:
            where = f"sqlite {os.path.abspath(self.sqlite_path or '')}"
        if self.redis_url is not None:
            where += f" + redis {redact(self.redis_url)}"
        return where

    def open_saver(self, **extra: Any) -> ResilientSaver:
        """A new (not entered) ``ResilientSaver`` on this connection."""
        from langgraph_resilient.checkpoint import ResilientSaver

        return ResilientSaver.from_urls(**self.saver_kwargs(**extra))


def _setting(flag_value: str | None, flag: str, env: str) -> tuple[str | None, str]:
    """A connection setting and where it came from: its flag, else its environment variable
    (``None`` when neither is given). Given but empty is an error: it would silently mean
    the default."""
    if flag_value is not None:
        if not flag_value.strip():
            raise UsageError(
                f"{flag} is empty: give a value, or leave the flag out to use the default"
            )
        return flag_value, flag
    value = os.environ.get(env)
    if value is not None and not value.strip():
        raise UsageError(f"{env} is set but empty: give it a value, or unset it")
    return value, env


def resolve_connection(args: argparse.Namespace) -> Connection:
    """The :class:`Connection` of a command's flags and the environment (a flag wins over
    its environment variable; ``--sqlite-path`` also wins over the Postgres variable)."""
    from langgraph_resilient.checkpoint.settings import DEFAULT_SQLITE_PATH

    postgres_url, postgres_from = _setting(args.postgres_url, "--postgres-url", ENV_POSTGRES_URL)
    redis_url, _ = _setting(args.redis_url, "--redis-url", ENV_REDIS_URL)
    sqlite_path, sqlite_from = _setting(args.sqlite_path, "--sqlite-path", ENV_SQLITE_PATH)
    prefix = _setting(args.prefix, "--prefix", ENV_PREFIX)[0] or "lgr_"
    if postgres_url is not None and sqlite_path is not None:
        if postgres_from.startswith("--") and sqlite_from.startswith("--"):
            raise UsageError(
                "give --postgres-url or --sqlite-path, not both: the durable tier is one database"
            )
        if sqlite_from.startswith("--"):
            postgres_url = None  # the flag chose SQLite over the environment's Postgres
        else:
            sqlite_path = None
    if postgres_url is None:
        sqlite_path = sqlite_path or DEFAULT_SQLITE_PATH
    _check_url(postgres_url, postgres_from, 5432)
    _check_url(redis_url, "--redis-url" if args.redis_url is not None else ENV_REDIS_URL, 6379)
    return Connection(postgres_url, sqlite_path, redis_url, prefix)


def _check_url(url: str | None, source: str, default_port: int) -> None:
    """Refuse a URL whose hosts and ports do not parse (before anything uses it)."""
    from langgraph_resilient.doctor import CheckFailed, split_hosts

    if url is not None:
        try:
            split_hosts(url, default_port)
        except CheckFailed as exc:
            raise UsageError(f"{source}: {exc}") from None


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres-url",
        help=f"Postgres URL of the durable tier (env {ENV_POSTGRES_URL}); "
        "default: the embedded SQLite file",
    )
    parser.add_argument(
        "--redis-url",
        help=f"Redis URL of the shared cache tier, in front of Postgres or SQLite "
        f"(env {ENV_REDIS_URL}); default: none",
    )
    parser.add_argument(
        "--sqlite-path",
        help=f"SQLite file of the embedded tier (env {ENV_SQLITE_PATH}, "
        "default ./langgraph_state.db)",
    )
    parser.add_argument(
        "--prefix", help=f"prefix of tables and Redis keys (env {ENV_PREFIX}, default lgr_)"
    )


# --------------------------------------------------------------------------- commands


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    _add_connection_args(parser)
    parser.add_argument("--thread", default="demo", help="thread id to run (default: demo)")


def cmd_demo(args: argparse.Namespace) -> int:
    from langgraph_resilient.demo import run_demo

    conn = resolve_connection(args)
    print(f"durable tier: {conn.describe()} (prefix {conn.prefix!r})")
    run_demo(conn.open_saver, thread_id=args.thread)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    conn = resolve_connection(args)

    async def migrate() -> None:
        # The durable tier alone: migrations do not need the Redis tier.
        saver = Connection(conn.postgres_url, conn.sqlite_path, None, conn.prefix).open_saver(
            migrate_on_enter=False
        )
        await saver.store.open()
        try:
            before = await saver.store.schema_version()
            after = await saver.store.migrate()
        finally:
            await saver.store.close()
        print(f"{conn.describe()}: schema version {before} -> {after}")
        from langgraph_resilient.server.thread_stores import migrate_thread_store

        print(await migrate_thread_store(conn.postgres_url, conn.sqlite_path, conn.prefix))

    asyncio.run(migrate())
    return 0


def _configure_doctor(parser: argparse.ArgumentParser) -> None:
    _add_connection_args(parser)
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=5.0,
        help="time limit of each check, in seconds (default 5)",
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from langgraph_resilient.doctor import run_doctor

    conn = resolve_connection(args)
    return run_doctor(
        postgres_url=conn.postgres_url,
        sqlite_path=conn.sqlite_path,
        redis_url=conn.redis_url,
        prefix=conn.prefix,
        timeout_s=args.timeout,
    )


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIT_NAMES = (("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60))
_AGE_RE = re.compile(r"^\s*([+-]?)(\d+(?:\.\d*)?|\.\d+)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_age(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``30d`` or ``2w`` as a duration (more than zero)."""
    match = _AGE_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age: write a number and a unit, like 90s, 15m, 12h, 30d or 2w"
        )
    sign, number, unit = match.groups()
    seconds = float(number) * _UNITS[unit.lower()]
    if sign == "-":
        raise argparse.ArgumentTypeError(
            f"{text!r} is negative: give how long a thread has been idle, like 30d"
        )
    if seconds <= 0 or not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not more than zero: an age of 0 would prune every thread; "
            "give one like 30d"
        )
    return timedelta(seconds=seconds)


def describe_age(age: timedelta) -> str:
    """``30 days``, ``12 hours``, ``90 seconds``: the largest unit that divides the age."""
    seconds = age.total_seconds()
    for name, size in _UNIT_NAMES:
        count = seconds / size
        if seconds >= size and count == int(count):
            return f"{int(count)} {name}{'s' if count != 1 else ''}"
    shown = int(seconds) if seconds == int(seconds) else seconds
    return f"{shown} second{'s' if seconds != 1 else ''}"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def _configure_prune(parser: argparse.ArgumentParser) -> None:
    _add_connection_args(parser)
    parser.add_argument(
        "--older-than",
        required=True,
        type=parse_age,
        help="prune threads idle for longer than this: 30d, 12h, 2w, 90m, 45s",
    )
    parser.add_argument(
        "--strategy",
        choices=("delete", "keep_latest"),
        default="delete",
        help="delete the threads (default) or keep only their newest checkpoints",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=500, help="threads per batch (default 500)"
    )


def cmd_prune(args: argparse.Namespace) -> int:
    conn = resolve_connection(args)

    async def prune() -> int:
        async with conn.open_saver(migrate_on_enter=False) as saver:
            count: int = await saver.aprune_older_than(
                args.older_than, strategy=args.strategy, batch_size=args.batch_size
            )
            return count

    count = asyncio.run(prune())
    outcome = "deleted" if args.strategy == "delete" else "kept only their newest checkpoints"
    done = f"pruned {count} thread(s) idle for more than {describe_age(args.older_than)}"
    if count:
        done += f" ({outcome})"
    print(f"{conn.describe()}: {done}")
    return 0


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    from langgraph_resilient.server.cli import add_serve_arguments  # no FastAPI until it runs

    _add_connection_args(parser)
    add_serve_arguments(parser)


def cmd_serve(args: argparse.Namespace) -> int:
    from langgraph_resilient.server.cli import run_serve

    conn = resolve_connection(args)
    return run_serve(
        args,
        postgres_url=conn.postgres_url,
        redis_url=conn.redis_url,
        sqlite_path=conn.sqlite_path,
        prefix=conn.prefix,
    )


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: its name, one line of help, its flags and what it runs."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: tuple[Command, ...] = (
    Command("demo", "run the demo graph (interrupt, stop, resume)", _configure_demo, cmd_demo),
    Command("migrate", "create or upgrade the schema", _add_connection_args, cmd_migrate),
    Command(
        "doctor",
        "check the tiers (read-only): connectivity, schema, Redis settings",
        _configure_doctor,
        cmd_doctor,
    ),
    Command(
        "prune",
        "retention: prune threads whose newest checkpoint is older than an age",
        _configure_prune,
        cmd_prune,
    ),
    Command(
        "serve",
        "serve graphs over LangGraph Server's API (needs the [server] extra)",
        _configure_serve,
        cmd_serve,
    ),
)
"""Every subcommand, in the order ``--help`` lists them: add new ones here."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``langgraph-resilient`` command."""
    parser = argparse.ArgumentParser(
        prog="langgraph-resilient",
        description="langgraph-resilient: demo, migrate, doctor, prune, serve.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub_parser)
        sub_parser.set_defaults(run=command.run, parser=sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``langgraph-resilient`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except UsageError as exc:
        args.parser.print_usage(sys.stderr)
        print(f"{args.parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ResilientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
