"""Settings of the graph server: flags, ``LANGGRAPH_RESILIENT_*`` variables, ``langgraph.json``.

One frozen dataclass that every worker process rebuilds from JSON (``to_json``/``from_json``),
so ``--workers N`` runs N identical apps.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from langgraph_resilient.errors import ConfigurationError

ENV_PREFIX = "LANGGRAPH_RESILIENT_"
SETTINGS_ENV = "LANGGRAPH_RESILIENT_SERVER_SETTINGS"
"""Where ``serve`` hands the settings to its uvicorn worker processes (JSON)."""


@dataclass(frozen=True)
class ServerSettings:
    """What a server process needs. Build it with :func:`load_settings` or by hand.

    Attributes:
        graphs: Graph name -> ``path/to/file.py:attr`` or ``package.module:attr`` (``attr``
            is a compiled graph, a ``StateGraph`` or a function returning one), or the graph
            object itself (then the settings cannot be handed to worker processes).
        base_dir: Directory relative graph paths resolve against (the ``langgraph.json``'s).
        postgres_url: The durable tier (else the embedded SQLite file ``sqlite_path``).
        redis_url: The shared cache and lease tier (with ``postgres_url``).
        sqlite_path: The embedded tier's file (default ``./langgraph_state.db``).
        prefix: Table and key prefix, shared with the saver.
        api_keys: Accepted ``x-api-key`` values; empty = no authentication.
        max_body_bytes: Larger request bodies get 413.
        cors_origins: Origins allowed by CORS; empty = CORS off.
        drain_grace_s: After SIGTERM, how long in-flight runs may take to finish before they
            are stopped at their next checkpoint boundary.
        enqueue_wait_s: How long a ``multitask_strategy="enqueue"`` run waits for the thread.
        lease_ttl_s: The thread lease's time to live (renewed while a run holds it).
        cancel_on_disconnect: Cancel a streamed run when its client disconnects (a request's
            ``on_disconnect`` overrides it).
        retry_after_s: ``Retry-After`` sent with 503 while draining.
        pool_max_size: Postgres connections of the saver's pool (its default, 10). Up to a
            third of them, at most 4, write in parallel; 5 or fewer leaves one writer (see
            docs/server.md, Benchmark).
    """

    graphs: dict[str, Any] = field(default_factory=dict)
    base_dir: str = "."
    postgres_url: str | None = None
    redis_url: str | None = None
    sqlite_path: str | None = None
    prefix: str = "lgr_"
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = 10 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    drain_grace_s: float = 30.0
    enqueue_wait_s: float = 60.0
    lease_ttl_s: float = 30.0
    cancel_on_disconnect: bool = True
    retry_after_s: int = 5
    pool_max_size: int = 10

    def __post_init__(self) -> None:
        if not self.graphs:
            raise ConfigurationError(
                "no graph to serve: pass --graph NAME=path/to/file.py:attr (or a langgraph.json "
                "with a 'graphs' section, or LANGGRAPH_RESILIENT_GRAPHS)"
            )
        for name, spec in self.graphs.items():
            if not name or (isinstance(spec, str) and ":" not in spec):
                raise ConfigurationError(
                    f"graph {name!r}: {spec!r} is not of the form path/to/file.py:attr or "
                    "package.module:attr"
                )
        if self.postgres_url and self.sqlite_path:
            raise ConfigurationError("give either a Postgres URL or a SQLite path, not both")
        for name in (
            "max_body_bytes",
            "drain_grace_s",
            "enqueue_wait_s",
            "lease_ttl_s",
            "pool_max_size",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0 (got {getattr(self, name)!r})")

    def saver_kwargs(self) -> dict[str, Any]:
        """``ResilientSaver.from_urls`` arguments for these settings."""
        kwargs: dict[str, Any] = {"prefix": self.prefix}
        if self.postgres_url:
            kwargs["postgres_url"] = self.postgres_url
            if self.redis_url:
                kwargs["redis_url"] = self.redis_url
        elif self.sqlite_path:
            kwargs["sqlite_path"] = self.sqlite_path
        return kwargs

    def to_json(self) -> str:
        """JSON for worker processes (graphs given as ``path:attr`` strings only)."""
        if not all(isinstance(spec, str) for spec in self.graphs.values()):
            raise ConfigurationError("graph objects cannot be sent to worker processes")
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerSettings:
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        for key in ("api_keys", "cors_origins"):
            data[key] = tuple(data.get(key) or ())
        return cls(**data)


def parse_graph_specs(specs: list[str]) -> dict[str, str]:
    """``["name=path.py:attr", ...]`` as a dict (``--graph`` and LANGGRAPH_RESILIENT_GRAPHS)."""
    graphs: dict[str, str] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep or not name.strip() or ":" not in target:
            raise ConfigurationError(
                f"--graph {spec!r} is not NAME=path/to/file.py:attr or NAME=package.module:attr"
            )
        graphs[name.strip()] = target.strip()
    return graphs


def read_api_keys(value: str | None, path: str | None) -> tuple[str, ...]:
    """API keys from a comma-separated value and/or a file with one key per line."""
    keys = [k.strip() for k in (value or "").split(",") if k.strip()]
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the API key file {path!r}: {exc}") from exc
        keys += [line.strip() for line in text.splitlines() if line.strip()]
        if not keys:
            raise ConfigurationError(f"the API key file {path!r} holds no key")
    return tuple(dict.fromkeys(keys))


def read_langgraph_json(path: str) -> tuple[dict[str, str], str, dict[str, str]]:
    """``graphs`` (file paths made absolute), base directory and ``env`` of a
    ``langgraph.json``-style file.

    ``env`` may be a mapping or the path of a ``.env`` file (relative to the config file).
    Other keys (``dependencies``, ``checkpointer``, ...) are ignored: this server uses its own
    saver.
    """
    config_path = Path(path)
    try:
        data = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {path!r}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("graphs"), dict):
        raise ConfigurationError(f"{path!r} has no 'graphs' mapping")
    base = str(config_path.resolve().parent)
    graphs: dict[str, str] = {}
    for name, target in data["graphs"].items():
        if isinstance(target, dict):  # {"path": ..., "description": ...}
            target = target.get("path")
        if not isinstance(target, str):
            raise ConfigurationError(f"{path!r}: graph {name!r} must be a 'file.py:attr' string")
        file, sep, attr = target.rpartition(":")
        if file.endswith(".py") and not Path(file).is_absolute():
            target = f"{(Path(base) / file).resolve()}{sep}{attr}"  # relative to the file
        graphs[str(name)] = target
    env_value = data.get("env") or {}
    env: dict[str, str] = {}
    if isinstance(env_value, dict):
        env = {str(k): str(v) for k, v in env_value.items()}
    elif isinstance(env_value, str):
        env = _read_dotenv(Path(base) / env_value)
    else:
        raise ConfigurationError(f"{path!r}: 'env' must be a mapping or a .env file path")
    return graphs, base, env


def _read_dotenv(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the env file {str(path)!r}: {exc}") from exc
    env: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        env[key.strip()] = value.strip().strip("'\"")
    return env


def env(name: str, default: str | None = None) -> str | None:
    """``LANGGRAPH_RESILIENT_<name>`` from the environment."""
    return os.environ.get(ENV_PREFIX + name, default)
