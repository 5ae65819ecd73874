"""The usage ledger writer and the rollup reconciler.

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
cross-table transaction) — is closed by `reconcile_rollups`, which the sink runs at start-up over recently
ingested rows: it recomputes the touched rollup keys from the ledger and inserts the differences.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple

import pyarrow as pa
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import BaseModel

from core.contracts import EnrichedUsage

log = logging.getLogger(__name__)

# Ledger columns (table order, without `ingested_at`, which the server fills) and their Arrow types.
_STR = pa.string()
_TS = pa.timestamp("ms", tz="UTC")
LEDGER_SCHEMA = pa.schema(
    [
        ("schema_version", pa.uint16()),
        ("event_id", _STR),
        ("revision", pa.uint64()),
        ("source", _STR),
        ("org_id", _STR),
        ("project_id", _STR),
        ("workload_id", _STR),
        ("connection_id", _STR),
        ("provider", _STR),
        ("model", _STR),
        ("region", _STR),
        ("routing_tier", _STR),
        ("bucket_start", _TS),
        ("bucket_end", _TS),
        ("event_timestamp", _TS),
        ("input_tokens_uncached", pa.uint64()),
        ("input_tokens_cached", pa.uint64()),
        ("input_tokens_cache_creation", pa.uint64()),
        ("output_tokens", pa.uint64()),
        ("request_count", pa.uint64()),
        ("labels", pa.map_(_STR, _STR)),
        ("model_tier", _STR),
        ("factors_version", _STR),
        ("is_estimated", pa.bool_()),
        ("estimation_reasons", pa.list_(_STR)),
        ("j_per_prefill_token", pa.float64()),
        ("j_per_decode_token", pa.float64()),
        ("j_per_cached_token", pa.float64()),
        ("j_per_cache_creation_token", pa.float64()),
        ("pue", pa.float64()),
        ("grid_intensity_kg_per_kwh", pa.float64()),
        ("energy_j", pa.float64()),
        ("energy_j_low", pa.float64()),
        ("energy_j_high", pa.float64()),
        ("co2_kg", pa.float64()),
        ("co2_kg_low", pa.float64()),
        ("co2_kg_high", pa.float64()),
        ("enriched_at", _TS),
        ("sign", pa.int8()),
    ]
)
EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in LEDGER_SCHEMA if f.name != "sign")
_EVENT_SCHEMA = pa.schema([f for f in LEDGER_SCHEMA if f.name != "sign"])
assert set(EVENT_FIELDS) == set(EnrichedUsage.model_fields), "ledger columns drifted from EnrichedUsage"

# Values for fields a mapping row may omit (the contract's defaults).
_DEFAULTS: dict[str, Any] = {
    "schema_version": 1,
    "revision": 0,
    "connection_id": None,
    "region": None,
    "routing_tier": None,
    "input_tokens_uncached": 0,
    "input_tokens_cached": 0,
    "input_tokens_cache_creation": 0,
    "output_tokens": 0,
    "request_count": 1,
    "labels": None,
    "estimation_reasons": None,
}
_TIME_FIELDS = ("bucket_start", "bucket_end", "event_timestamp", "enriched_at")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_FEW_BUCKETS = 256  # up to this many distinct bucket_starts, the lookup uses bucket_start IN (…)
_TMP_TABLE_PREFIX = "_ledger_tmp_"  # key and staging tables; stale ones are dropped by the reconciler
_MAX_QUERY_SIZE = {"max_query_size": 1 << 26}
# Inserts into the ledger feed its two materialized views in parallel. Sequentially (the default), chdb
# 26.9 spends ~100 ms more per insert (any size above a few rows) than the two views cost together: an
# insert of 5k rows took 110–180 ms that way and 14–35 ms in parallel (bench/warehouse_write.py).
_LEDGER_INSERT = {**_MAX_QUERY_SIZE, "parallel_view_processing": 1}


class WriteResult(NamedTuple):
    inserted: int  # +1 rows written (new live revisions)
    cancelled: int  # −1 rows written (superseded revisions cancelled)
    skipped_duplicates: int  # incoming (event_id, revision) already live, or repeated in the batch
    skipped_stale: int  # incoming revision lower than a live or a batch-mate revision


# ---------------------------------------------------------------------------------------------------------
# input normalisation


def _columns(events: Sequence[EnrichedUsage] | Sequence[Mapping[str, Any]]) -> dict[str, Sequence[Any]]:
    """Column sequences from EnrichedUsage objects or mappings with the same field names.

    Transposed with C-level itemgetter/zip rather than one Python loop per column (~2× faster), with the
    cyclic GC paused: the 50k short-lived row tuples would otherwise trigger full collections that traverse
    every live object of the batch (~40% of the time). The pause is bounded by this function.
    """
    rows = [e.__dict__ if isinstance(e, BaseModel) else e for e in events]
    getter = itemgetter(*EVENT_FIELDS)
    with _gc_paused():
        try:
            transposed = list(zip(*map(getter, rows), strict=True))
        except KeyError:
            transposed = list(zip(*(getter(_with_defaults(r)) for r in rows), strict=True))
    cols: dict[str, Sequence[Any]] = dict(zip(EVENT_FIELDS, transposed, strict=True))
    for name in _TIME_FIELDS:
        col = cols[name]
        if any(isinstance(v, str) for v in col):
            cols[name] = [datetime.fromisoformat(v) if isinstance(v, str) else v for v in col]
    if None in cols["labels"]:
        cols["labels"] = [v or {} for v in cols["labels"]]
    if None in cols["estimation_reasons"]:
        cols["estimation_reasons"] = [v or [] for v in cols["estimation_reasons"]]
    return cols


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _with_defaults(row: Mapping[str, Any]) -> dict[str, Any]:
    missing = [f for f in EVENT_FIELDS if f not in row and f not in _DEFAULTS]
    if missing:
        raise ValueError(f"usage row without required field(s) {', '.join(missing)}")
    return {**_DEFAULTS, **row}


def _ms_literal(ms: int) -> str:
    dt = _EPOCH + timedelta(milliseconds=ms)
    return f"'{dt:%Y-%m-%d %H:%M:%S}.{ms % 1000:03d}'"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_arrow(events: Sequence[EnrichedUsage] | Sequence[Mapping[str, Any]], sign: int = 1) -> pa.Table:
    """Ledger rows (Arrow, `LEDGER_SCHEMA`) for events, all with the given sign — for tools and tests that
    write the ledger by hand; the writer path is `write_enriched`."""
    table = _arrow_table(_columns(events))
    return _with_sign(table, list(range(table.num_rows)), sign)


def _arrow_table(cols: dict[str, Sequence[Any]]) -> pa.Table:
    """The batch as Arrow (without `sign`)."""
    arrays = [pa.array(cols[f.name], type=f.type) for f in LEDGER_SCHEMA if f.name != "sign"]
    return pa.Table.from_arrays(arrays, schema=_EVENT_SCHEMA)


def _with_sign(table: pa.Table, idx: list[int], sign: int) -> pa.Table:
    """Rows `idx` of the batch with the given sign, in LEDGER_SCHEMA."""
    rows = table if idx == list(range(table.num_rows)) else table.take(pa.array(idx, type=pa.int64()))
    return rows.append_column("sign", pa.repeat(pa.scalar(sign, type=pa.int8()), len(idx)))


# ---------------------------------------------------------------------------------------------------------
# temporary tables: the batch's event ids travel to the server as a small Memory table (an Arrow insert), which
# is ~10× faster than a 50k-literal IN (…) list — parsing the literals dominates otherwise. The JSON path
# stages whole rows the same way.


def _tmp_table_name() -> str:
    return f"{_TMP_TABLE_PREFIX}{int(time.time())}_{uuid.uuid4().hex[:12]}"


@contextmanager
def _memory_table(client: Client, ddl: str) -> Iterator[str]:
    name = _tmp_table_name()
    client.command(f"CREATE TABLE {name} ({ddl}) ENGINE = Memory")
    try:
        yield name
    finally:
        client.command(f"DROP TABLE IF EXISTS {name}")


@contextmanager
def _key_table(client: Client, columns: dict[str, pa.Array]) -> Iterator[str]:
    ddl = ", ".join(f"{col} {_CH_TYPES[arr.type]}" for col, arr in columns.items())
    with _memory_table(client, ddl) as name:
        client.insert_arrow(name, pa.table(columns))
        yield name


_CH_TYPES = {pa.string(): "String", pa.uint64(): "UInt64"}
_STAGE_TYPES = {
    _STR: "String",
    _TS: "DateTime64(3, 'UTC')",
    pa.uint64(): "UInt64",
    pa.uint16(): "UInt16",
    pa.bool_(): "Bool",
    pa.float64(): "Float64",
    pa.map_(_STR, _STR): "Map(String, String)",
    pa.list_(_STR): "Array(String)",
}
# Required fields are Nullable in the staging table, so that a payload without one stages a NULL (caught below)
# instead of ClickHouse's silent default; so are the contract's optional strings.
REQUIRED_FIELDS: tuple[str, ...] = tuple(
    f for f in EVENT_FIELDS if EnrichedUsage.model_fields[f].is_required()
)
_NULLABLE = {*REQUIRED_FIELDS, "connection_id", "region", "routing_tier"}
_STAGE_DDL = ", ".join(
    f"{f.name} {f'Nullable({_STAGE_TYPES[f.type]})' if f.name in _NULLABLE else _STAGE_TYPES[f.type]}"
    for f in _EVENT_SCHEMA
)
_JSON_SETTINGS = {
    "date_time_input_format": "best_effort",  # ISO-8601 with "T" and "Z", as the enriched topic has them
    "precise_float_parsing": 1,  # the same doubles as orjson/Python: totals stay exact
    "input_format_parallel_parsing": 0,  # one batch is a few MB: threads cost more than they save
}


class UnfitRows(ValueError):
    """Payloads that do not fit the ledger's columns (bad JSON, wrong types, missing required fields)."""


@contextmanager
def _json_stage(client: Client, payloads: Sequence[bytes]) -> Iterator[str]:
    """A Memory table holding `payloads` (one JSON object each) parsed by ClickHouse."""
    with _memory_table(client, _STAGE_DDL) as name:
        try:
            client.raw_insert(
                name, insert_block=b"\n".join(payloads), fmt="JSONEachRow", settings=_JSON_SETTINGS
            )
        except DatabaseError as exc:
            raise UnfitRows(f"payloads do not parse as ledger rows: {str(exc)[:500]}") from exc
        yield name


def drop_stale_key_tables(client: Client, older_than: timedelta = timedelta(hours=1)) -> int:
    """Drop key tables left behind by writers that crashed mid-batch (their names carry a timestamp)."""
    cutoff = time.time() - older_than.total_seconds()
    names = client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND startsWith(name, {p:String})",
        parameters={"p": _TMP_TABLE_PREFIX},
    ).result_rows
    dropped = 0
    for (name,) in names:
        try:
            created = int(name[len(_TMP_TABLE_PREFIX) :].split("_", 1)[0])
        except ValueError:
            continue
        if created < cutoff:
            client.command(f"DROP TABLE IF EXISTS {name}")
            dropped += 1
    return dropped


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
    batch = _arrow_table(_columns(events))
    ids = pa.array(set(batch.column("event_id").to_pylist()), type=pa.string())
    with _key_table(client, {"event_id": ids}) as keys:
        return _write_batch(client, batch, keys)


def write_enriched_json(client: Client, payloads: Sequence[bytes]) -> WriteResult:
    """`write_enriched` for the enriched topic's JSON payloads, parsed by ClickHouse (see the module doc).

    The payloads never come back to Python: only their keys (event_id, revision, org_id, bucket_start) are
    read from the staging table, and one `INSERT … SELECT` writes the batch's new live rows (from the staging
    table) together with the −1 copies of the revisions they supersede (from the ledger). The rare batches
    that need anything else (repairs after a crash mid-batch) take the Arrow path of `write_enriched`.

    Raises `UnfitRows` (a ValueError) when a payload is not one JSON object that fits the ledger's columns;
    nothing is written then, and the caller can validate the payloads one by one.
    """
    if not payloads:
        return WriteResult(0, 0, 0, 0)
    with _json_stage(client, payloads) as stage:
        nulls = client.query(
            f"SELECT count(), {', '.join(f'countIf(isNull({f}))' for f in REQUIRED_FIELDS)} FROM {stage}"
        ).result_rows[0]
        if nulls[0] != len(payloads):
            raise UnfitRows(f"{len(payloads)} payloads staged as {nulls[0]} rows")
        missing = [f for f, n in zip(REQUIRED_FIELDS, nulls[1:], strict=True) if n]
        if missing:
            raise UnfitRows(f"row(s) without required field(s) {', '.join(missing)}")
        keys = client.query_arrow(f"SELECT {', '.join(_KEY_FIELDS)} FROM {stage}").cast(_KEY_SCHEMA)
        plan = _plan(client, keys, stage)
        repair = plan.minus_idx or len(set(plan.plus_idx)) != len(plan.plus_idx)
        if repair or any(d != -1 for d in plan.old_fix.values()):
            batch = client.query_arrow(f"SELECT {', '.join(EVENT_FIELDS)} FROM {stage}").cast(_EVENT_SCHEMA)
            return _apply(client, plan, batch)
        names = ", ".join(EVENT_FIELDS)
        selects: list[str] = []
        with ExitStack() as tables:
            if len(plan.plus_idx) == keys.num_rows:  # the usual case: every row is new and distinct
                selects.append(f"SELECT {names}, toInt8(1) AS sign FROM {stage}")
            elif plan.plus_idx:
                take = pa.array(plan.plus_idx, type=pa.int64())
                chosen = tables.enter_context(
                    _key_table(client, {c: keys.column(c).take(take) for c in ("event_id", "revision")})
                )
                selects.append(  # batch-mates with the same revision have the same content: keep one
                    f"SELECT {names}, toInt8(1) AS sign FROM {stage} "
                    f"WHERE (event_id, revision) IN (SELECT event_id, revision FROM {chosen}) "
                    "LIMIT 1 BY event_id, revision"
                )
            if plan.old_fix:  # superseded live revisions: a −1 copy of each, in the same statement
                cancel = tables.enter_context(
                    _key_table(
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
        parts.append(_with_sign(batch, plan.plus_idx, +1))
    if plan.minus_idx:
        parts.append(_with_sign(batch, plan.minus_idx, -1))
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
    with _key_table(client, key_cols) as keys:
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


# ---------------------------------------------------------------------------------------------------------
# reconcile


_ROLLUP_KEYS = ("org_id", "project_id", "provider", "model", "model_tier", "factors_version", "source")
_INT_SUMS = (
    "events",
    "request_count",
    "input_tokens_uncached",
    "input_tokens_cached",
    "input_tokens_cache_creation",
    "output_tokens",
)
_FLOAT_SUMS = (
    "energy_j",
    "energy_j_low",
    "energy_j_high",
    "co2_kg",
    "co2_kg_low",
    "co2_kg_high",
    "energy_cached_savings_j",
    "co2_cached_savings_kg",
)
# sign × value expressions over usage_events, matching the MVs of migration 0001
LEDGER_SUMS: dict[str, str] = {
    "events": "sum(toInt64(e.sign))",
    **{c: f"sum(e.sign * e.{c})" for c in _INT_SUMS[1:]},
    **{c: f"sum(e.sign * e.{c})" for c in _FLOAT_SUMS[:6]},
    "energy_cached_savings_j": "sum(e.sign * e.input_tokens_cached * (e.j_per_prefill_token - e.j_per_cached_token)"
    " * e.pue)",
    "co2_cached_savings_kg": "sum(e.sign * e.input_tokens_cached * (e.j_per_prefill_token - e.j_per_cached_token)"
    " * e.pue * e.grid_intensity_kg_per_kwh / 3600000)",
}
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
    keys = (_ROLLUP_KEYS[0], bucket_col, *_ROLLUP_KEYS[1:])
    key_list = ", ".join(keys)
    sums = (*_INT_SUMS, *_FLOAT_SUMS)
    truth_cols = ", ".join(f"{expr} AS {name}" for name, expr in LEDGER_SUMS.items())
    rollup_cols = ", ".join(f"sum({c}) AS {c}" for c in sums)
    touched = (
        f"SELECT DISTINCT e.org_id, {bucket_expr} FROM usage_events AS e "
        "WHERE e.ingested_at >= {since:DateTime64(3, 'UTC')}"
    )
    sql = (
        f"SELECT {key_list}, {', '.join(f't.{c}' for c in sums)}, {', '.join(f'r.{c}' for c in sums)} FROM "
        f"(SELECT e.org_id AS org_id, {bucket_expr} AS {bucket_col}, "
        f"{', '.join(f'e.{k} AS {k}' for k in _ROLLUP_KEYS[1:])}, {truth_cols} "
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
        ints = [
            int(t) - int(r) for t, r in zip(truth[: len(_INT_SUMS)], rolled[: len(_INT_SUMS)], strict=True)
        ]
        floats_t = truth[len(_INT_SUMS) :]
        floats_r = rolled[len(_INT_SUMS) :]
        if any(ints) or any(_differs(t, r) for t, r in zip(floats_t, floats_r, strict=True)):
            diffs.append(key + ints + [t - r for t, r in zip(floats_t, floats_r, strict=True)])
    if diffs:
        log.warning(
            "reconcile: %d %s key(s) differed from the ledger; difference rows inserted", len(diffs), table
        )
        client.insert(table, diffs, column_names=[*keys, *sums])
    return len(diffs)


__all__ = [
    "EVENT_FIELDS",
    "LEDGER_SCHEMA",
    "UnfitRows",
    "WriteResult",
    "drop_stale_key_tables",
    "reconcile_rollups",
    "to_arrow",
    "write_enriched",
    "write_enriched_json",
]
