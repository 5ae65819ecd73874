"""The usage ledger writer: batches of enriched events into the signed ledger `usage_events`.

`usage_events` is a signed ledger: one row per (event_id, revision) state change, `sign` +1 makes a revision
live, −1 cancels it (a copy of the live row). The MV rollups sum sign × value, so every figure is exact as soon
as the insert returns — no merge, no FINAL.

`write_enriched` keeps the invariant "per event_id, net sign is 0 or 1, at most one live revision":

1. dedupe the batch, keeping the highest revision per event_id (same revision = same content);
2. look up the live state of those events (net sign per (event_id, revision)) with a primary-key-friendly
   query: org_id IN …, bucket_start range (or IN, when few), event_id IN (keys);
3. per event: target revision = max(incoming, live revisions); write whatever rows bring every revision's net
   sign to its desired value (1 for the target, 0 for the others): cancel rows (−1, copy of the old row) for
   superseded live revisions, a +1 row for the incoming revision when it is the target and not live yet;
4. one insert for the whole batch.

Two entry points share that algorithm: `write_enriched` takes EnrichedUsage objects or mappings (tools,
tests, the sink's fallback); `write_enriched_json` takes the enriched topic's JSON payloads as they are and
lets ClickHouse parse them into a staging table (JSONEachRow, C++), which then serves as the batch (read
back as Arrow) and as the key table of the live lookup. It is the sink's hot path: no Python object per
field, no Python-side Arrow build.

The lookup reads the truth, not a cache, so the writer is self-healing: a batch re-run after a crash in the
middle of a previous attempt (some partitions' parts written, others not) converges to exactly one live row.

Assumptions (contract rules):

* Single writer per event_id at a time: the enriched topic is keyed by event_id, so one partition — one sink
  task — owns an event. Two concurrent writers of the same event could both see it "not live" and both insert;
  the next write of that event would heal it, but nothing else would.
* Event identity includes the bucket: all revisions of an event_id keep the same org_id and bucket_start
  (poller ids are derived from provider, connection, bucket, model, …). The live lookup is scoped by them.

The remaining gap — a crash after the ledger part is committed but before the MV parts are (there is no
cross-table transaction) — is closed by `warehouse.reconcile.reconcile_rollups`, which the sink runs at
start-up over recently ingested rows: it recomputes the touched rollup keys from the ledger and inserts the
differences. The batch's Arrow form and the temporary tables are `warehouse.staging`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pyarrow as pa
from clickhouse_connect.driver import Client

from core.contracts import EnrichedUsage
from warehouse.measures import EVENT_FIELDS, EVENT_SCHEMA, LEDGER_SCHEMA
from warehouse.staging import (
    REQUIRED_FIELDS,
    SAVINGS_FIELDS,
    UnfitRows,
    arrow_batch,
    drop_stale_key_tables,
    fill_savings,
    json_stage,
    key_table,
    to_arrow,
    with_sign,
)

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FEW_BUCKETS = 256  # up to this many distinct bucket_starts, the lookup uses bucket_start IN (…)
_MAX_QUERY_SIZE = {"max_query_size": 1 << 26}
# Inserts into the ledger feed its two materialized views in parallel: sequentially (the default), chdb spends
# a fixed extra time per insert that is larger than the two views cost together (bench/warehouse_write.py).
_LEDGER_INSERT = {**_MAX_QUERY_SIZE, "parallel_view_processing": 1}


class WriteResult(NamedTuple):
    inserted: int  # +1 rows written (new live revisions)
    cancelled: int  # −1 rows written (superseded revisions cancelled)
    skipped_duplicates: int  # incoming (event_id, revision) already live, or repeated in the batch
    skipped_stale: int  # incoming revision lower than a live or a batch-mate revision


def _ms_literal(ms: int) -> str:
    dt = _EPOCH + timedelta(milliseconds=ms)
    return f"'{dt:%Y-%m-%d %H:%M:%S}.{ms % 1000:03d}'"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------------------------------------------------
# the writer


def _scope_filter(orgs: set[str], bucket_ms: set[int]) -> str:
    parts = [f"org_id IN ({', '.join(_quote(o) for o in sorted(orgs))})"]
    parts.append(
        f"bucket_start >= {_ms_literal(min(bucket_ms))} AND bucket_start <= {_ms_literal(max(bucket_ms))}"
    )
    if len(bucket_ms) <= _FEW_BUCKETS:
        parts.append(f"bucket_start IN ({', '.join(_ms_literal(b) for b in sorted(bucket_ms))})")
    return " AND ".join(parts)


def write_enriched(
    client: Client, events: Sequence[EnrichedUsage] | Sequence[Mapping[str, Any]]
) -> WriteResult:
    """Write a batch of enriched events to the ledger; idempotent, and self-healing when re-run.

    `events` are EnrichedUsage objects or mappings with the same field names (datetimes as aware datetimes
    or ISO-8601 strings). Times are stored with millisecond precision.
    """
    if not events:
        return WriteResult(0, 0, 0, 0)
    batch = arrow_batch(events)
    ids = pa.array(set(batch.column("event_id").to_pylist()), type=pa.string())
    with key_table(client, {"event_id": ids}) as keys:
        return _write_batch(client, batch, keys)


def write_enriched_json(client: Client, payloads: Sequence[bytes]) -> WriteResult:
    """`write_enriched` for the enriched topic's JSON payloads, parsed by ClickHouse (see the module doc).

    The payloads never come back to Python: only their keys (event_id, revision, org_id, bucket_start) are
    read from the staging table, and one `INSERT … SELECT` writes the batch's new live rows (from the staging
    table) together with the −1 copies of the revisions they supersede (from the ledger). The rare batches
    that need anything else (repairs after a crash mid-batch, payloads of producers that predate the
    cached-savings fields, which Python then fills in) take the Arrow path of `write_enriched`.

    Raises `UnfitRows` (a ValueError) when a payload is not one JSON object that fits the ledger's columns;
    nothing is written then, and the caller can validate the payloads one by one.
    """
    if not payloads:
        return WriteResult(0, 0, 0, 0)
    with json_stage(client, payloads) as stage:
        checked = (*REQUIRED_FIELDS, *SAVINGS_FIELDS)
        nulls = client.query(
            f"SELECT count(), {', '.join(f'countIf(isNull({f}))' for f in checked)} FROM {stage}"
        ).result_rows[0]
        if nulls[0] != len(payloads):
            raise UnfitRows(f"{len(payloads)} payloads staged as {nulls[0]} rows")
        missing = [f for f, n in zip(checked, nulls[1:], strict=True) if n and f in REQUIRED_FIELDS]
        if missing:
            raise UnfitRows(f"row(s) without required field(s) {', '.join(missing)}")
        keys = client.query_arrow(f"SELECT {', '.join(_KEY_FIELDS)} FROM {stage}").cast(_KEY_SCHEMA)
        plan = _plan(client, keys, stage)
        repair = plan.minus_idx or len(set(plan.plus_idx)) != len(plan.plus_idx)
        older_producer = any(nulls[1 + len(REQUIRED_FIELDS) :])  # payloads without the savings fields
        if repair or older_producer or any(d != -1 for d in plan.old_fix.values()):
            batch = client.query_arrow(f"SELECT {', '.join(EVENT_FIELDS)} FROM {stage}").cast(EVENT_SCHEMA)
            return _apply(client, plan, fill_savings(batch))
        names = ", ".join(EVENT_FIELDS)
        selects: list[str] = []
        with ExitStack() as tables:
            if len(plan.plus_idx) == keys.num_rows:  # the usual case: every row is new and distinct
                selects.append(f"SELECT {names}, toInt8(1) AS sign FROM {stage}")
            elif plan.plus_idx:
                take = pa.array(plan.plus_idx, type=pa.int64())
                chosen = tables.enter_context(
                    key_table(client, {c: keys.column(c).take(take) for c in ("event_id", "revision")})
                )
                selects.append(  # batch-mates with the same revision have the same content: keep one
                    f"SELECT {names}, toInt8(1) AS sign FROM {stage} "
                    f"WHERE (event_id, revision) IN (SELECT event_id, revision FROM {chosen}) "
                    "LIMIT 1 BY event_id, revision"
                )
            if plan.old_fix:  # superseded live revisions: a −1 copy of each, in the same statement
                cancel = tables.enter_context(
                    key_table(
                        client,
                        {
                            "event_id": pa.array([k[0] for k in plan.old_fix], type=pa.string()),
                            "revision": pa.array([k[1] for k in plan.old_fix], type=pa.uint64()),
                        },
                    )
                )
                selects.append(
                    f"SELECT {names}, toInt8(-1) AS sign FROM (SELECT {names} FROM usage_events "
                    f"WHERE {plan.scope} AND (event_id, revision) IN (SELECT event_id, revision FROM {cancel}) "
                    "ORDER BY sign DESC LIMIT 1 BY event_id, revision)"
                )
            if selects:
                client.command(
                    f"INSERT INTO usage_events ({names}, sign) "
                    + " UNION ALL ".join(f"SELECT * FROM ({q})" for q in selects),
                    settings=_LEDGER_INSERT,
                )
        return plan.result()


_KEY_FIELDS = ("event_id", "revision", "org_id", "bucket_start")
_KEY_SCHEMA = pa.schema([LEDGER_SCHEMA.field(f) for f in _KEY_FIELDS])


class _Plan(NamedTuple):
    """What one batch must write: batch rows to insert with +1 / −1, and signed copies of stored rows."""

    plus_idx: list[int]
    minus_idx: list[int]
    old_fix: dict[tuple[str, int], int]
    scope: str
    dup: int
    stale: int

    def result(self) -> WriteResult:
        inserted = len(self.plus_idx) + sum(d for d in self.old_fix.values() if d > 0)
        cancelled = len(self.minus_idx) - sum(d for d in self.old_fix.values() if d < 0)
        return WriteResult(inserted, cancelled, self.dup, self.stale)


def _write_batch(client: Client, batch: pa.Table, keys: str) -> WriteResult:
    """The algorithm of the module doc over one batch (Arrow, `EVENT_FIELDS`); `keys` is a table on the server
    whose `event_id` column holds (at least) the batch's event ids."""
    missing = [f for f in REQUIRED_FIELDS if batch.column(f).null_count]
    if missing:
        raise UnfitRows(f"row(s) without required field(s) {', '.join(missing)}")
    return _apply(client, _plan(client, batch, keys), batch)


def _plan(client: Client, batch: pa.Table, keys: str) -> _Plan:
    """Steps 1–3 of the module doc. `batch` needs the `_KEY_FIELDS` columns only."""
    ids: list[str] = batch.column("event_id").to_pylist()
    revs: list[int] = batch.column("revision").to_pylist()

    # 1. in-batch dedupe: highest revision per event_id wins; equal revisions are duplicates
    best: dict[str, int] = {}
    dup = stale = 0
    for i, (eid, rev) in enumerate(zip(ids, revs, strict=True)):
        j = best.get(eid)
        if j is None:
            best[eid] = i
        elif rev > revs[j]:
            best[eid] = i
            stale += 1
        elif rev == revs[j]:
            dup += 1
        else:
            stale += 1

    # 2. live state of these events
    orgs = set(batch.column("org_id").unique().to_pylist())
    bucket_ms = set(batch.column("bucket_start").cast(pa.int64()).unique().to_pylist())
    scope = _scope_filter(orgs, bucket_ms)
    live_rows = client.query(
        f"SELECT event_id, revision, toInt64(sum(sign)) AS net FROM usage_events "
        f"WHERE {scope} AND event_id IN (SELECT event_id FROM {keys}) "
        "GROUP BY event_id, revision HAVING net != 0",
        settings=_MAX_QUERY_SIZE,
    ).result_rows
    live: dict[str, dict[int, int]] = {}
    for eid, rev, net in live_rows:
        live.setdefault(eid, {})[int(rev)] = int(net)

    # 3. decide: rows bringing each revision's net sign to 1 (target) or 0 (every other revision)
    plus_idx: list[int] = []  # incoming rows to write with sign +1
    minus_idx: list[int] = []  # incoming rows to write with sign −1 (target revision over-counted)
    old_fix: dict[tuple[str, int], int] = {}  # (event_id, revision) of stored rows → signed copies to write
    for eid, i in best.items():
        rev = revs[i]
        state = live.get(eid)
        if not state:
            plus_idx.append(i)
            continue
        target = max([rev, *(r for r, n in state.items() if n > 0)])
        for r, net in state.items():
            if r == rev == target:
                continue  # fixed below with copies of the incoming row (same revision = same content)
            delta = (1 if r == target else 0) - net
            if delta:
                old_fix[(eid, r)] = delta
        if target == rev:
            net = state.get(rev, 0)
            if net >= 1:
                dup += 1
            if net < 1:
                plus_idx.extend([i] * (1 - net))
            elif net > 1:
                minus_idx.extend([i] * (net - 1))
        else:
            stale += 1
    return _Plan(plus_idx, minus_idx, old_fix, scope, dup, stale)


def _apply(client: Client, plan: _Plan, batch: pa.Table) -> WriteResult:
    """Step 4: one insert of the plan's rows, taken from the Arrow batch (and copies of stored rows)."""
    parts: list[pa.Table] = []
    if plan.plus_idx:
        parts.append(with_sign(batch, plan.plus_idx, +1))
    if plan.minus_idx:
        parts.append(with_sign(batch, plan.minus_idx, -1))
    if plan.old_fix:
        parts.append(_stored_copies(client, plan.scope, plan.old_fix))
    if parts:
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        client.insert_arrow("usage_events", table, settings=_LEDGER_INSERT)
    return plan.result()


def _stored_copies(client: Client, scope: str, fix: dict[tuple[str, int], int]) -> pa.Table:
    """Copies of stored rows (one per (event_id, revision)), repeated |delta| times with sign(delta)."""
    key_cols = {
        "event_id": pa.array([k[0] for k in fix], type=pa.string()),
        "revision": pa.array([k[1] for k in fix], type=pa.uint64()),
    }
    names = ", ".join(f for f in EVENT_FIELDS)
    with key_table(client, key_cols) as keys:
        stored = client.query_arrow(
            f"SELECT {names} FROM usage_events WHERE {scope} "
            f"AND (event_id, revision) IN (SELECT event_id, revision FROM {keys}) "
            "ORDER BY sign DESC LIMIT 1 BY event_id, revision",
            settings=_MAX_QUERY_SIZE,
        )
    ids = stored.column("event_id").to_pylist()
    revs = stored.column("revision").to_pylist()
    take: list[int] = []
    sign: list[int] = []
    for row, (eid, rev) in enumerate(zip(ids, revs, strict=True)):
        delta = fix.get((eid, int(rev)), 0)
        take.extend([row] * abs(delta))
        sign.extend([1 if delta > 0 else -1] * abs(delta))
    missing = set(fix) - {(e, int(r)) for e, r in zip(ids, revs, strict=True)}
    if missing:  # cannot happen: the live lookup just saw these rows
        raise RuntimeError(f"ledger rows vanished during write: {sorted(missing)[:5]}")
    out = stored.take(pa.array(take, type=pa.int64())).append_column("sign", pa.array(sign, type=pa.int8()))
    return out.cast(LEDGER_SCHEMA)


__all__ = [
    "EVENT_FIELDS",
    "LEDGER_SCHEMA",
    "UnfitRows",
    "WriteResult",
    "drop_stale_key_tables",
    "to_arrow",
    "write_enriched",
    "write_enriched_json",
]
