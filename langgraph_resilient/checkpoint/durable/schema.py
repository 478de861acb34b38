"""Schema versions shared by the durable backends.

Each backend keeps its own migration statements next to the code that runs them; both move in
lock step, so one number describes the schema whatever the backend.
"""

from __future__ import annotations

from langgraph_resilient.errors import SchemaVersionError

SCHEMA_VERSION = 1
"""The schema version this release writes and reads."""


def check_version(tier: str, found: int) -> None:
    """Refuse a database this code cannot use (newer than it, or not migrated yet)."""
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{tier}: the database is at schema version {found} but this langgraph-resilient "
            f"knows only up to {SCHEMA_VERSION}; upgrade the package on this replica"
        )
    if found < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{tier}: the database is at schema version {found}, this release needs "
            f"{SCHEMA_VERSION}; run `langgraph-resilient migrate` or enter the saver with "
            "migrate_on_enter=True"
        )
