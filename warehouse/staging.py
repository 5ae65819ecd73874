"""The batch on its way into the ledger: Arrow columns from events, and temporary tables on the server.

* `to_arrow` / `arrow_batch`: EnrichedUsage objects or mappings → an Arrow table in the ledger's column types
  (`warehouse.measures.LEDGER_SCHEMA`), the cached-savings measures filled in where a row lacks them.
* `key_table`: a batch's keys travel to the server as a small Memory table (an Arrow insert), which is ~10×
  faster than a 50k-literal IN (…) list — parsing the literals dominates otherwise.
* `json_stage`: the enriched topic's JSON payloads parsed by ClickHouse (JSONEachRow) into a Memory table.
* `drop_stale_key_tables`: the clean-up of tables left behind by writers that crashed mid-batch.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import BaseModel

from core.contracts import MODALITY_FIELDS, UNIT_FIELDS, EnrichedUsage
from core.methodology import cached_savings
from warehouse.measures import EVENT_FIELDS, EVENT_SCHEMA, LEDGER_SCHEMA

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
    "energy_cached_savings_j": None,
    "co2_cached_savings_kg": None,
    "energy_source": "estimated",
    **dict.fromkeys((*MODALITY_FIELDS, *UNIT_FIELDS), 0),  # issue 21: 0 = not reported (migration 0005)
}
# Optional contract fields added by methodology v2 — the raw event's measured energy, the v2 figures and their
# factors — stored as NULL when absent (Nullable ledger columns, migration 0003).
OPTIONAL_FIELDS: tuple[str, ...] = tuple(
    f
    for f in EVENT_FIELDS
    if f
    not in ("connection_id", "region", "routing_tier", "energy_cached_savings_j", "co2_cached_savings_kg")
    and not EnrichedUsage.model_fields[f].is_required()
    and EnrichedUsage.model_fields[f].default is None
)
_DEFAULTS.update(dict.fromkeys(OPTIONAL_FIELDS))
_TIME_FIELDS = ("bucket_start", "bucket_end", "event_timestamp", "enriched_at")
# Optional contract fields the writer computes when a producer left them out (see `fill_savings`).
SAVINGS_FIELDS = ("energy_cached_savings_j", "co2_cached_savings_kg")
_SAVINGS_INPUTS = (
    "input_tokens_cached",
    "j_per_prefill_token",
    "j_per_cached_token",
    "pue",
    "grid_intensity_kg_per_kwh",
)
TMP_TABLE_PREFIX = "_ledger_tmp_"  # key and staging tables; stale ones are dropped by the reconciler
_STR = pa.string()
_TS = pa.timestamp("ms", tz="UTC")


def columns_of(events: Sequence[EnrichedUsage] | Sequence[Mapping[str, Any]]) -> dict[str, Sequence[Any]]:
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
    if any(None in cols[f] for f in SAVINGS_FIELDS):
        cols.update(_filled_savings(cols))
    return cols


def _filled_savings(cols: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """The cached-savings columns with the rows that lack them (producers older than those fields) computed by
    the methodology from the row's own factors."""
    out: dict[str, list[Any]] = {f: list(cols[f]) for f in SAVINGS_FIELDS}
    energy, co2 = out[SAVINGS_FIELDS[0]], out[SAVINGS_FIELDS[1]]
    for i, inputs in enumerate(zip(*(cols[f] for f in _SAVINGS_INPUTS), strict=True)):
        if energy[i] is None or co2[i] is None:
            energy[i], co2[i] = cached_savings(*inputs)
    return out


def fill_savings(table: pa.Table) -> pa.Table:
    """`table` (Arrow, ledger columns) with null cached-savings values computed (see `_filled_savings`)."""
    if not any(table.column(f).null_count for f in SAVINGS_FIELDS):
        return table
    cols = {f: table.column(f).to_pylist() for f in (*SAVINGS_FIELDS, *_SAVINGS_INPUTS)}
    for name, values in _filled_savings(cols).items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), pa.array(values, type=pa.float64()))
    return table


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


def arrow_batch(events: Sequence[EnrichedUsage] | Sequence[Mapping[str, Any]]) -> pa.Table:
    """The events as Arrow, in the ledger's column types (`EVENT_SCHEMA`, without `sign`)."""
    return arrow_batch_from_columns(columns_of(events))


def to_arrow(events: Sequence[EnrichedUsage] | Sequence[Mapping[str, Any]], sign: int = 1) -> pa.Table:
    """Ledger rows (Arrow, `LEDGER_SCHEMA`) for events, all with the given sign — for tools and tests that
    write the ledger by hand; the writer path is `write_enriched`."""
    table = arrow_batch(events)
    return with_sign(table, list(range(table.num_rows)), sign)


def arrow_batch_from_columns(cols: dict[str, Sequence[Any]]) -> pa.Table:
    """The batch as Arrow (without `sign`)."""
    arrays = [pa.array(cols[f.name], type=f.type) for f in LEDGER_SCHEMA if f.name != "sign"]
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def with_sign(table: pa.Table, idx: list[int], sign: int) -> pa.Table:
    """Rows `idx` of the batch with the given sign, in LEDGER_SCHEMA."""
    rows = table if idx == list(range(table.num_rows)) else table.take(pa.array(idx, type=pa.int64()))
    return rows.append_column("sign", pa.repeat(pa.scalar(sign, type=pa.int8()), len(idx)))


# ---------------------------------------------------------------------------------------------------------
# temporary tables


def _tmp_table_name() -> str:
    return f"{TMP_TABLE_PREFIX}{int(time.time())}_{uuid.uuid4().hex[:12]}"


@contextmanager
def memory_table(client: Client, ddl: str) -> Iterator[str]:
    name = _tmp_table_name()
    client.command(f"CREATE TABLE {name} ({ddl}) ENGINE = Memory")
    try:
        yield name
    finally:
        client.command(f"DROP TABLE IF EXISTS {name}")


@contextmanager
def key_table(client: Client, columns: dict[str, pa.Array]) -> Iterator[str]:
    ddl = ", ".join(f"{col} {_CH_TYPES[arr.type]}" for col, arr in columns.items())
    with memory_table(client, ddl) as name:
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
_NULLABLE = {*REQUIRED_FIELDS, "connection_id", "region", "routing_tier", *SAVINGS_FIELDS, *OPTIONAL_FIELDS}
_STAGE_DEFAULTS = {"energy_source": " DEFAULT 'estimated'"}  # payloads of producers older than the field
_STAGE_DDL = ", ".join(
    f"{f.name} {f'Nullable({_STAGE_TYPES[f.type]})' if f.name in _NULLABLE else _STAGE_TYPES[f.type]}"
    + _STAGE_DEFAULTS.get(f.name, "")
    for f in EVENT_SCHEMA
)
_JSON_SETTINGS = {
    "date_time_input_format": "best_effort",  # ISO-8601 with "T" and "Z", as the enriched topic has them
    "precise_float_parsing": 1,  # the same doubles as orjson/Python: totals stay exact
    "input_format_parallel_parsing": 0,  # one batch is a few MB: threads cost more than they save
}


class UnfitRows(ValueError):
    """Payloads that do not fit the ledger's columns (bad JSON, wrong types, missing required fields)."""


@contextmanager
def json_stage(client: Client, payloads: Sequence[bytes]) -> Iterator[str]:
    """A Memory table holding `payloads` (one JSON object each) parsed by ClickHouse."""
    with memory_table(client, _STAGE_DDL) as name:
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
        parameters={"p": TMP_TABLE_PREFIX},
    ).result_rows
    dropped = 0
    for (name,) in names:
        try:
            created = int(name[len(TMP_TABLE_PREFIX) :].split("_", 1)[0])
        except ValueError:
            continue
        if created < cutoff:
            client.command(f"DROP TABLE IF EXISTS {name}")
            dropped += 1
    return dropped
