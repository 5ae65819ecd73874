"""Queries of the monthly close: the signed ledger as of an `ingested_at` cutoff.

A close of (org, month) with cutoff C reads the ledger rows (both signs) that are

* in the month: `start <= bucket_start < end` and `ingested_at <= C`, or
* late events of earlier months (the adjustment): `bucket_start < start` and `A < ingested_at <= C`, where A
  is the cutoff of the org's previous closed period (no adjustment when there is none).

Ledger rows are never updated or deleted, so the rows up to a cutoff never change: a re-run reads the same
rows and computes the same figures. An event of a closed month that arrives after that month's cutoff is
counted once, in the next close, never in the closed one. Every figure is sum(sign × value).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver import Client

from warehouse.measures import LEDGER_SCHEMA, LEDGER_SUMS, columns

_TS = pa.timestamp("ms", tz="UTC")
CLOSE_SCHEMA = pa.schema([*LEDGER_SCHEMA, pa.field("ingested_at", _TS), pa.field("adjustment", pa.bool_())])
ORDER = "e.bucket_start, e.event_id, e.revision, e.sign, e.ingested_at"
# count of ledger rows, then sign × value of each `totals` measure (warehouse.measures)
_SUMS = {"ledger_rows": "count()", **{c: LEDGER_SUMS[c] for c in columns("totals")}}


def _scope(
    start: date, end: date, cutoff: datetime, adjustment_from: datetime | None
) -> tuple[str, str, dict[str, Any]]:
    """(WHERE condition, adjustment expression, parameters)."""
    params: dict[str, Any] = {"start": start, "end": end, "cutoff": cutoff}
    in_month = "(e.bucket_start >= {start:Date} AND e.bucket_start < {end:Date})"
    if adjustment_from is None:
        return f"e.ingested_at <= {{cutoff:DateTime64(3, 'UTC')}} AND {in_month}", "false", params
    params["adj"] = adjustment_from
    late = "(e.bucket_start < {start:Date} AND e.ingested_at > {adj:DateTime64(3, 'UTC')})"
    return (
        f"e.ingested_at <= {{cutoff:DateTime64(3, 'UTC')}} AND ({in_month} OR {late})",
        "e.bucket_start < {start:Date}",
        params,
    )


def close_orgs(client: Client, start: date, end: date, cutoff: datetime) -> list[str]:
    """Orgs with ledger rows to close in the month as of `cutoff`: usage in the month, or late events of
    earlier months ingested since the month started (candidates for an adjustment)."""
    result = client.query(
        "SELECT DISTINCT e.org_id FROM usage_events AS e "
        "WHERE e.ingested_at <= {cutoff:DateTime64(3, 'UTC')} AND ("
        "(e.bucket_start >= {start:Date} AND e.bucket_start < {end:Date}) OR "
        "(e.bucket_start < {start:Date} AND e.ingested_at >= {start:Date})) ORDER BY e.org_id",
        parameters={"start": start, "end": end, "cutoff": cutoff},
    )
    return [r[0] for r in result.result_rows]


def close_totals(
    client: Client, org_id: str, start: date, end: date, cutoff: datetime, adjustment_from: datetime | None
) -> dict[str, dict[str, Any]]:
    """SQL sums of sign × value, split into "month" and "adjustment" (late events of earlier months)."""
    where, adj, params = _scope(start, end, cutoff, adjustment_from)
    params["org_id"] = org_id
    cols = ", ".join(f"{expr} AS {name}" for name, expr in _SUMS.items())
    result = client.query(
        f"SELECT {adj} AS adjustment, {cols} FROM usage_events AS e "
        f"WHERE e.org_id = {{org_id:String}} AND {where} GROUP BY adjustment",
        parameters=params,
    )
    out: dict[str, dict[str, Any]] = {"month": dict.fromkeys(_SUMS, 0), "adjustment": dict.fromkeys(_SUMS, 0)}
    for row in result.named_results():
        out["adjustment" if row.pop("adjustment") else "month"] = row
    return out


def close_events(
    client: Client, org_id: str, start: date, end: date, cutoff: datetime, adjustment_from: datetime | None
) -> pa.Table:
    """The ledger rows of the close (both signs, with `ingested_at` and an `adjustment` flag), in a
    deterministic order, as Arrow (`CLOSE_SCHEMA`)."""
    where, adj, params = _scope(start, end, cutoff, adjustment_from)
    params["org_id"] = org_id
    cols = ", ".join(f"e.{f.name} AS {f.name}" for f in LEDGER_SCHEMA)
    table = client.query_arrow(
        f"SELECT {cols}, e.ingested_at AS ingested_at, {adj} AS adjustment FROM usage_events AS e "
        f"WHERE e.org_id = {{org_id:String}} AND {where} ORDER BY {ORDER}",
        parameters=params,
        use_strings=True,
    )
    return conform(table)


def conform(table: pa.Table) -> pa.Table:
    """`table` with exactly CLOSE_SCHEMA's column types (dictionary-encoded LowCardinality columns decoded,
    timestamps in ms UTC), so the Parquet written from it does not depend on how it was fetched."""
    arrays = []
    for field in CLOSE_SCHEMA:
        col = table.column(field.name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        arrays.append(col.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=CLOSE_SCHEMA)
