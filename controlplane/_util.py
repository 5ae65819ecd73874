"""Small helpers shared by the control-plane repositories."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def now() -> datetime:
    """The current instant, timezone-aware UTC (every control-plane timestamp is aware)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new row id (UUID4 text)."""
    return str(uuid.uuid4())


def aware_utc(dt: datetime | None) -> datetime | None:
    """`dt` as aware UTC; a naive value (SQLite aggregates bypass `UTCDateTime`) is taken as UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def sql_in(column: str, values: tuple[str, ...]) -> str:
    """A CHECK constraint's SQL text: `column IN ('a', 'b')`."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"
