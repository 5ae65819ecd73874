"""The rollup reconciler: makes `usage_hourly` / `usage_daily` equal the signed ledger again.

The materialized views keep the rollups exact, except after a crash between the ledger part and the MV parts
of one insert (there is no cross-table transaction). `reconcile_rollups`, which the sink runs at start-up over
recently ingested rows, recomputes the touched rollup keys from the ledger (the measures' `ledger_sum`, the
views' own aggregates) and inserts the differences.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver import Client

from warehouse.measures import FLOAT_MEASURES, INT_MEASURES, LEDGER_SUMS, ROLLUP_KEYS, rollup_key_sql
from warehouse.staging import drop_stale_key_tables

log = logging.getLogger(__name__)

_REL_TOL = 1e-9
_ABS_TOL = 1e-12


def _differs(truth: float, rolled: float) -> bool:
    return abs(truth - rolled) > _REL_TOL * max(abs(truth), abs(rolled)) + _ABS_TOL


def reconcile_rollups(client: Client, since: datetime) -> int:
    """Make the hourly and daily rollups equal the ledger for every (org, hour|day) touched by ledger rows
    ingested at or after `since`: insert (truth − rollup) difference rows. Returns the rows inserted; a
    second call inserts nothing. Also drops key tables abandoned by crashed writers.
    """
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    inserted = 0
    for table, bucket_col, bucket_expr in (
        ("usage_hourly", "hour", "toStartOfHour(e.bucket_start)"),
        ("usage_daily", "day", "toDate(e.bucket_start)"),
    ):
        inserted += _reconcile_table(client, since, table, bucket_col, bucket_expr)
    drop_stale_key_tables(client)
    return inserted


def _reconcile_table(client: Client, since: datetime, table: str, bucket_col: str, bucket_expr: str) -> int:
    keys = (ROLLUP_KEYS[0], bucket_col, *ROLLUP_KEYS[1:])
    key_list = ", ".join(keys)
    sums = (*INT_MEASURES, *FLOAT_MEASURES)
    truth_cols = ", ".join(f"{LEDGER_SUMS[c]} AS {c}" for c in sums)
    rollup_cols = ", ".join(f"sum({c}) AS {c}" for c in sums)
    touched = (
        f"SELECT DISTINCT e.org_id, {bucket_expr} FROM usage_events AS e "
        "WHERE e.ingested_at >= {since:DateTime64(3, 'UTC')}"
    )
    sql = (
        f"SELECT {key_list}, {', '.join(f't.{c}' for c in sums)}, {', '.join(f'r.{c}' for c in sums)} FROM "
        f"(SELECT e.org_id AS org_id, {bucket_expr} AS {bucket_col}, "
        f"{', '.join(f'{rollup_key_sql(k)} AS {k}' for k in ROLLUP_KEYS[1:])}, {truth_cols} "
        f"FROM usage_events AS e WHERE (e.org_id, {bucket_expr}) IN ({touched}) GROUP BY {key_list}) AS t "
        f"FULL OUTER JOIN (SELECT {key_list}, {rollup_cols} FROM {table} "
        f"WHERE (org_id, {bucket_col}) IN ({touched}) GROUP BY {key_list}) AS r USING ({key_list})"
    )
    rows = client.query(sql, parameters={"since": since}).result_rows
    n_keys, n_sums = len(keys), len(sums)
    diffs: list[list[Any]] = []
    for row in rows:
        key = list(row[:n_keys])
        truth = row[n_keys : n_keys + n_sums]
        rolled = row[n_keys + n_sums :]
        n_ints = len(INT_MEASURES)
        ints = [int(t) - int(r) for t, r in zip(truth[:n_ints], rolled[:n_ints], strict=True)]
        floats_t, floats_r = truth[n_ints:], rolled[n_ints:]
        if any(ints) or any(_differs(t, r) for t, r in zip(floats_t, floats_r, strict=True)):
            diffs.append(key + ints + [t - r for t, r in zip(floats_t, floats_r, strict=True)])
    if diffs:
        log.warning(
            "reconcile: %d %s key(s) differed from the ledger; difference rows inserted", len(diffs), table
        )
        client.insert(table, diffs, column_names=[*keys, *sums])
    return len(diffs)


__all__ = ["reconcile_rollups"]
