"""Queries of re-enrichment (`joulestream reenrich`): the live ledger rows to recompute, by org and month.

A row is live when its (event_id, revision) has a positive net sign (the signed ledger, warehouse/ledger.py).
Re-enrichment reads the live rows of an org's month page by page (ordered by event_id), recomputes each from
its stored raw tokens with another factor version (core's `enrich`, in the caller), and writes the result as
revision + 1 through the ledger writer (`write_enriched`), which cancels the old revision in the same insert:
the totals move from the old figures to the new ones, never both. The rollups follow through their views.

Both functions are also served by the runtime that holds an embedded warehouse (api/internal_reenrich.py).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver import Client

from warehouse.measures import EVENT_FIELDS, EVENT_SCHEMA

_LIVE = "GROUP BY event_id, revision HAVING sum(sign) > 0"


def live_months(client: Client, since: date, org_id: str | None = None) -> list[dict[str, Any]]:
    """[{"org_id", "month" ("YYYY-MM"), "events"}] of the live events with `bucket_start >= since`, ordered."""
    org = "AND org_id = {org:String} " if org_id is not None else ""
    rows = client.query(
        "SELECT org_id, formatDateTime(first_bucket, '%Y-%m') AS month, count() FROM ("
        "SELECT org_id, any(bucket_start) AS first_bucket FROM usage_events "
        f"WHERE bucket_start >= {{since:Date}} {org}"
        "GROUP BY org_id, event_id, revision HAVING sum(sign) > 0) "
        "GROUP BY org_id, month ORDER BY org_id, month",
        parameters={"since": since, "org": org_id},
    ).result_rows
    return [{"org_id": o, "month": m, "events": int(n)} for o, m, n in rows]


def live_page(
    client: Client, org_id: str, start: date, end: date, since: date, after: str, limit: int
) -> pa.Table:
    """Up to `limit` live rows of the org with `max(start, since) <= bucket_start < end` and event_id > `after`,
    ordered by event_id (the ledger's columns, `EVENT_SCHEMA`)."""
    scope = (
        "org_id = {org:String} AND bucket_start >= {start:Date} AND bucket_start < {end:Date} "
        "AND bucket_start >= {since:Date}"
    )
    names = ", ".join(EVENT_FIELDS)
    table = client.query_arrow(
        f"SELECT {names} FROM usage_events WHERE {scope} AND (event_id, revision) IN ("
        f"SELECT event_id, revision FROM usage_events WHERE {scope} AND event_id > {{after:String}} "
        f"{_LIVE} ORDER BY event_id, revision LIMIT {{limit:UInt32}}) "
        "ORDER BY event_id, revision, sign DESC LIMIT 1 BY event_id, revision",
        parameters={
            "org": org_id,
            "start": start,
            "end": end,
            "since": since,
            "after": after,
            "limit": limit,
        },
    )
    return table.cast(EVENT_SCHEMA)


__all__ = ["live_months", "live_page"]
