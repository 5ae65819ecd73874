"""Read queries behind the dashboard API's telemetry and export endpoints (every SQL string they use).

* Sums come from the rollups (`usage_daily`, `usage_hourly`), aggregated with sum() … GROUP BY and groups
  whose events cancelled out (`events = 0`) dropped — exact without merges or FINAL.
* Event lists come from the signed ledger `usage_events`: an event is listed once per *live* revision, i.e. a
  (event_id, revision) whose rows sum to sign 1 (`GROUP BY … HAVING sum(sign) = 1`); a cancelled revision
  (+1 then −1) never shows, nor counts.
* Every query is scoped by `org_id` (the tenancy invariant): `Scope.org_id` is required.
* Date ranges are **inclusive** calendar days in UTC, `start <= day <= end`, either side optional. They are
  clamped to ClickHouse's `Date` range (1970-01-01 … 2149-06-06) so any ISO date is a valid bound.
* Times are returned as epoch milliseconds / seconds from SQL and turned into aware UTC datetimes here (the
  chdb engine may drop the zone of `DateTime('UTC')` columns in its output).

The export is streamed: `ExportStream` splits the window into runs of whole days (~64k rollup rows each,
`export_plan`) and reads each run's query block by block (CSV and JSON as ClickHouse's own output, Parquet
as Native column blocks), so neither ClickHouse (one run aggregated and sorted at a time) nor Python (one
block at a time) holds memory that grows with the export. A single GROUP BY over a 90-day window of a big
org would aggregate ~1M groups at once: measured ~400 MB more peak RSS for 1M rows, against ~60 MB in runs.
On the embedded engine a streaming query holds its client handle until closed, so exports run on their own
client (`stream_client`), never on the one serving the other queries.
"""

from __future__ import annotations

import array
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from clickhouse_connect.driver import Client

MIN_DAY = date(1970, 1, 1)  # ClickHouse Date range
MAX_DAY = date(2149, 6, 6)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TOKEN_COLUMNS = (
    "input_tokens_uncached",
    "input_tokens_cached",
    "input_tokens_cache_creation",
    "output_tokens",
)
EXPORT_COLUMNS = (
    "date",
    "model",
    "provider",
    "project_name",
    "input_tokens_uncached",
    "input_tokens_cached",
    "input_tokens_cache_creation",
    "output_tokens",
    "energy_j",
    "co2_kg",
    "co2_kg_low",
    "co2_kg_high",
    "factors_version",
)
ExportFormat = Literal["csv", "json", "parquet"]


def clamp_day(d: date) -> date:
    return min(max(d, MIN_DAY), MAX_DAY)


def _ms_to_dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(ms))


@dataclass(frozen=True)
class Scope:
    """Which rows a query sees: one org, optionally a day range (inclusive), a project, a model."""

    org_id: str
    start: date | None = None
    end: date | None = None
    project_id: str | None = None
    model: str | None = None

    def where(
        self, table: Literal["daily", "hourly", "ledger"] = "daily", alias: str = ""
    ) -> tuple[str, dict]:
        """The WHERE clause (and its parameters) over the daily rollup (`day`), the hourly rollup (`hour`) or
        the ledger (`bucket_start`, its primary key after org_id: ranged on the column itself)."""
        p = alias
        parts = [f"{p}org_id = {{org_id:String}}"]
        params: dict[str, Any] = {"org_id": self.org_id}
        if self.start is not None:
            params["start"] = clamp_day(self.start)
            if table == "ledger":
                parts.append(f"{p}bucket_start >= toDateTime64({{start:Date}}, 3, 'UTC')")
            else:
                parts.append(
                    f"{p}day >= {{start:Date}}" if table == "daily" else f"toDate({p}hour) >= {{start:Date}}"
                )
        if self.end is not None:
            params["end"] = clamp_day(self.end)
            if table == "ledger":
                parts.append(f"{p}bucket_start < toDateTime64({{end:Date}}, 3, 'UTC') + INTERVAL 1 DAY")
            else:
                parts.append(
                    f"{p}day <= {{end:Date}}" if table == "daily" else f"toDate({p}hour) <= {{end:Date}}"
                )
        if self.project_id is not None:
            parts.append(f"{p}project_id = {{project_id:String}}")
            params["project_id"] = self.project_id
        if self.model is not None:
            parts.append(f"{p}model = {{model:String}}")
            params["model"] = self.model
        return " AND ".join(parts), params


# --------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class DailyModelRow:
    """Sums of one (day, provider, model, factors_version) group of the daily rollup."""

    day: date
    provider: str
    model: str
    factors_version: str
    events: int
    input_tokens_uncached: int
    input_tokens_cached: int
    input_tokens_cache_creation: int
    output_tokens: int
    energy_j: float
    co2_kg: float
    co2_kg_low: float
    co2_kg_high: float
    co2_cached_savings_kg: float

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens_uncached
            + self.input_tokens_cached
            + self.input_tokens_cache_creation
            + self.output_tokens
        )


_DAILY_SUMS = (
    "events",
    *TOKEN_COLUMNS,
    "energy_j",
    "co2_kg",
    "co2_kg_low",
    "co2_kg_high",
    "co2_cached_savings_kg",
)


def daily_by_model(client: Client, scope: Scope) -> list[DailyModelRow]:
    """The daily rollup grouped by (day, provider, model, factors_version): everything a dashboard summary
    needs (totals, bounds, cache split, per-model shares, daily chart) in one round trip."""
    where, params = scope.where("daily", alias="d.")
    sums = ", ".join(f"sum(d.{c}) AS {c}" for c in _DAILY_SUMS)
    result = client.query(
        f"SELECT d.day AS day, d.provider AS provider, d.model AS model, d.factors_version AS factors_version, "
        f"{sums} FROM usage_daily AS d WHERE {where} "
        "GROUP BY day, provider, model, factors_version HAVING events != 0 "
        "ORDER BY day, provider, model, factors_version",
        parameters=params,
    )
    return [DailyModelRow(*row) for row in result.result_rows]


def project_co2(
    client: Client, org_id: str, project_ids: Sequence[str], start: date | None, end: date | None
) -> dict[str, float]:
    """project id → total CO2e (kg) over [start, end] (inclusive), from the daily rollup."""
    if not project_ids:
        return {}
    where, params = Scope(org_id, start, end).where("daily", alias="d.")
    params["project_ids"] = list(project_ids)
    result = client.query(
        "SELECT d.project_id AS project_id, sum(d.co2_kg) AS co2_kg, sum(d.events) AS events "
        f"FROM usage_daily AS d WHERE {where} AND d.project_id IN {{project_ids:Array(String)}} "
        "GROUP BY project_id HAVING events != 0",
        parameters=params,
    )
    return {pid: float(co2) for pid, co2, _ in result.result_rows}


# --------------------------------------------------------------------------------------------- models


def models(client: Client, scope: Scope) -> list[dict[str, Any]]:
    """Per (provider, model): tokens, CO2e (with bounds), energy, live event count, and the first and last
    hour with usage (the start of that hour). Largest CO2e first.

    Sums and the first / last *day* come from the daily rollup; the hours are then looked up in the hourly
    rollup for those few days only (the hourly rollup of a whole org is ~24x the daily one)."""
    where, params = scope.where("daily", alias="d.")
    sums = ", ".join(f"sum(d.{c}) AS {c}" for c in _MODEL_SUMS)
    result = client.query(
        "SELECT provider, model, "
        + ", ".join(f"sum({c}) AS {c}" for c in _MODEL_SUMS)
        + ", min(day) AS first_day, max(day) AS last_day FROM ("
        "SELECT d.provider AS provider, d.model AS model, d.day AS day, "
        f"{sums} FROM usage_daily AS d WHERE {where} GROUP BY provider, model, day HAVING events != 0) "
        "GROUP BY provider, model",
        parameters=params,
    )
    rows = list(result.named_results())
    if not rows:
        return []
    days = sorted({r["first_day"] for r in rows} | {r["last_day"] for r in rows})
    where, params = scope.where("hourly", alias="h.")
    params["days"] = days
    hours: dict[tuple[str, str, date], tuple[int, int]] = {}
    for provider, model, day, first, last in client.query(
        "SELECT provider, model, toDate(hour) AS day, toUnixTimestamp(min(hour)), toUnixTimestamp(max(hour)) "
        "FROM (SELECT h.provider AS provider, h.model AS model, h.hour AS hour, sum(h.events) AS ev "
        f"FROM usage_hourly AS h WHERE {where} AND toDate(h.hour) IN {{days:Array(Date)}} "
        "GROUP BY provider, model, hour HAVING ev != 0) GROUP BY provider, model, day",
        parameters=params,
    ).result_rows:
        hours[(provider, model, day)] = (int(first), int(last))
    out = []
    for r in rows:
        first_day = datetime.combine(r["first_day"], datetime.min.time(), UTC)
        last_day = datetime.combine(r["last_day"], datetime.min.time(), UTC)
        first = hours.get((r["provider"], r["model"], r["first_day"]))
        last = hours.get((r["provider"], r["model"], r["last_day"]))
        out.append(
            {
                "model": r["model"],
                "provider": r["provider"],
                "total_tokens": sum(int(r[c]) for c in TOKEN_COLUMNS),
                **{c: int(r[c]) for c in TOKEN_COLUMNS},
                "total_co2_kg": float(r["co2_kg"]),
                "total_co2_lower_bound_kg": float(r["co2_kg_low"]),
                "total_co2_upper_bound_kg": float(r["co2_kg_high"]),
                "energy_j": float(r["energy_j"]),
                "event_count": int(r["events"]),
                # the hourly rollup can only disagree if it is being reconciled: fall back to the day
                "first_seen": _ms_to_dt(first[0] * 1000) if first else first_day,
                "last_seen": _ms_to_dt(last[1] * 1000) if last else last_day,
            }
        )
    out.sort(key=lambda m: (-m["total_co2_kg"], m["provider"], m["model"]))
    return out


_MODEL_SUMS = ("events", *TOKEN_COLUMNS, "energy_j", "co2_kg", "co2_kg_low", "co2_kg_high")


# --------------------------------------------------------------------------------------------- events

EVENT_COLUMNS = (
    "event_id",
    "revision",
    "source",
    "project_id",
    "workload_id",
    "provider",
    "model",
    "model_tier",
    "region",
    "routing_tier",
    *TOKEN_COLUMNS,
    "request_count",
    "energy_j",
    "co2_kg",
    "co2_kg_low",
    "co2_kg_high",
    "factors_version",
    "is_estimated",
)
_EVENT_TIMES = ("bucket_start", "bucket_end", "event_timestamp")


def _slab(counts: Sequence[tuple[Any, int]], offset: int, limit: int) -> tuple[Any, Any, int] | None:
    """`counts`: (bucket, live events) newest bucket first. The buckets holding positions
    [offset, offset + limit) of the newest-first list: (oldest bucket, newest bucket, events in the buckets
    newer than the newest one), or None when offset is past the end."""
    seen = 0
    newest = oldest = None
    newer = 0
    for bucket, n in counts:
        if n <= 0:
            continue
        if newest is None:
            if seen + n <= offset:
                seen += n
                continue
            newest, newer = bucket, seen
        oldest = bucket
        seen += n
        if seen >= offset + limit:
            break
    return None if newest is None else (oldest, newest, newer)


def events_page(client: Client, scope: Scope, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """One page of live events, newest first — by bucket_start, then event_id, then revision, all descending:
    a total order, so pages are stable — and the number of live events in scope.

    Live = the (event_id, revision) rows of the ledger sum to sign 1 (`GROUP BY … HAVING sum(sign) = 1`); the
    −1 rows are copies of the +1 row they cancel, so any() of a column over the group is the live row's value.

    Grouping a whole org's ledger for every page would cost seconds at millions of events, so the rollups
    serve as an index: their `events` column is the number of live events per (org, day|hour, project,
    model, …). The daily rollup gives the total and the days holding the page, the hourly rollup narrows that
    to hours, and only those hours of the ledger are grouped. (All rows of an event share its bucket_start,
    so an event never straddles two hours.)"""
    where, params = scope.where("daily", alias="d.")
    per_day = client.query(
        f"SELECT d.day AS day, sum(d.events) AS n FROM usage_daily AS d WHERE {where} "
        "GROUP BY day HAVING n != 0 ORDER BY day DESC",
        parameters=params,
    ).result_rows
    total = sum(int(n) for _, n in per_day)
    days = _slab([(d, int(n)) for d, n in per_day], offset, limit)
    if days is None:
        return [], total
    old_day, new_day, newer_days = days
    where, params = scope.where("hourly", alias="h.")
    params.update(old_day=old_day, new_day=new_day)
    per_hour = client.query(
        f"SELECT toUnixTimestamp(h.hour) AS hour, sum(h.events) AS n FROM usage_hourly AS h WHERE {where} "
        "AND h.hour >= toDateTime({old_day:Date}, 'UTC') "
        "AND h.hour < toDateTime({new_day:Date}, 'UTC') + INTERVAL 1 DAY "
        "GROUP BY hour HAVING n != 0 ORDER BY hour DESC",
        parameters=params,
    ).result_rows
    hours = _slab([(int(h), int(n)) for h, n in per_hour], offset - newer_days, limit)
    if hours is None:  # the hourly rollup disagrees with the daily one (being reconciled): whole days
        lo = datetime.combine(old_day, datetime.min.time(), UTC)
        hi = datetime.combine(new_day, datetime.min.time(), UTC) + timedelta(days=1)
        skip = offset - newer_days
    else:
        old_hour, new_hour, newer_hours = hours
        lo, hi = _ms_to_dt(old_hour * 1000), _ms_to_dt(new_hour * 1000) + timedelta(hours=1)
        skip = offset - newer_days - newer_hours
    where, params = scope.where("ledger", alias="e.")
    params.update(lo=lo, hi=hi, skip=max(0, skip), limit=int(limit))
    keep = ", ".join(f"any(e.{c}) AS {c}" for c in EVENT_COLUMNS[2:])
    times = ", ".join(f"toUnixTimestamp64Milli(any(e.{c})) AS {c}" for c in _EVENT_TIMES[1:])
    result = client.query(
        "SELECT toUnixTimestamp64Milli(bs) AS bucket_start, * EXCEPT (bs) FROM ("
        f"SELECT e.bucket_start AS bs, e.event_id AS event_id, e.revision AS revision, {keep}, {times} "
        f"FROM usage_events AS e WHERE {where} "
        "AND e.bucket_start >= {lo:DateTime64(3, 'UTC')} AND e.bucket_start < {hi:DateTime64(3, 'UTC')} "
        "GROUP BY bs, event_id, revision HAVING sum(e.sign) = 1) "
        "ORDER BY bs DESC, event_id DESC, revision DESC LIMIT {limit:UInt64} OFFSET {skip:UInt64}",
        parameters=params,
    )
    out = []
    for r in result.named_results():
        for c in _EVENT_TIMES:
            r[c] = _ms_to_dt(r[c])
        out.append(r)
    return out, total


def live_event_count(client: Client, scope: Scope) -> int:
    """Number of live (event_id, revision) pairs in scope, straight from the ledger (the reference the
    rollup-based count of `events_page` must equal)."""
    where, params = scope.where("ledger", alias="e.")
    return int(
        client.query(
            "SELECT count() FROM (SELECT 1 FROM usage_events AS e "
            f"WHERE {where} GROUP BY e.event_id, e.revision HAVING sum(e.sign) = 1)",
            parameters=params,
        ).result_rows[0][0]
    )


# --------------------------------------------------------------------------------------------- export


def export_query(scope: Scope, project_names: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The export rows of `scope`: the daily rollup per day × project × provider × model × factors version,
    in that order. project_name is the control-plane name (the project id when the control plane has
    none). Output settings: 64-bit integers unquoted in JSON, small blocks (bounded chunks)."""
    where, params = scope.where("daily", alias="d.")
    params["pids"] = list(project_names)
    params["pnames"] = list(project_names.values())
    sums = ", ".join(
        f"sum(d.{c}) AS {c}" for c in (*TOKEN_COLUMNS, "energy_j", "co2_kg", "co2_kg_low", "co2_kg_high")
    )
    cols = ", ".join(EXPORT_COLUMNS[4:12])
    sql = (
        "SELECT day AS date, model, provider, "
        "transform(project_id, {pids:Array(String)}, {pnames:Array(String)}, project_id) AS project_name, "
        f"{cols}, factors_version FROM ("
        "SELECT d.day AS day, d.project_id AS project_id, d.provider AS provider, d.model AS model, "
        f"d.factors_version AS factors_version, sum(d.events) AS events, {sums} "
        f"FROM usage_daily AS d WHERE {where} "
        "GROUP BY day, project_id, provider, model, factors_version HAVING events != 0) "
        "ORDER BY date, project_id, provider, model, factors_version "
        f"SETTINGS max_block_size = {EXPORT_BLOCK_ROWS}, output_format_json_quote_64bit_integers = 0, "
        "output_format_json_quote_64bit_floats = 0"
    )
    return sql, params


EXPORT_BLOCK_ROWS = 8192  # rows per ClickHouse block: one chunk of the response is ~1-2 MB
EXPORT_QUERY_ROWS = 65_536  # rollup rows per export query (a run of whole days): bounds the server's memory


def export_plan(client: Client, scope: Scope, max_rows: int = EXPORT_QUERY_ROWS) -> list[tuple[date, date]]:
    """Split the export of `scope` into runs of whole days holding at most ~`max_rows` rollup rows each
    (a single day may hold more), oldest first. Each run is one query: ClickHouse aggregates and sorts
    one run at a time, so its memory is bounded by the run, not by the export."""
    where, params = scope.where("daily", alias="d.")
    per_day = client.query(
        f"SELECT d.day AS day, count() AS n FROM usage_daily AS d WHERE {where} GROUP BY day ORDER BY day",
        parameters=params,
    ).result_rows
    runs: list[tuple[date, date]] = []
    first: date | None = None
    last: date | None = None
    rows = 0
    for day, n in per_day:
        if first is not None and rows + n > max_rows:
            runs.append((first, last))  # type: ignore[arg-type]
            first, rows = None, 0
        if first is None:
            first = day
        last, rows = day, rows + int(n)
    if first is not None:
        runs.append((first, last))  # type: ignore[arg-type]
    return runs


def stream_client(client: Client) -> tuple[Client, bool]:
    """A client to run one streaming query on, and whether the caller owns (must close) it.

    The embedded engine (chdb) holds a client's handle for as long as a stream is open, and any other call on
    that handle fails or waits: a stream gets a fresh client on the same path (another handle to the one
    engine). An HTTP client streams over its own pooled connection, so it is shared."""
    path = getattr(client, "path", None)
    if type(client).__name__ == "ChdbClient" and path:
        import clickhouse_connect

        fresh = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        fresh.database = client.database
        return fresh, True
    return client, False


class ExportStream:
    """One export being read. `next_chunk()` returns the next piece of the response body (bytes), b"" at the
    end; `close()` releases the open query. Both block: call them on the warehouse thread. Not thread-safe.

    The rows are read run by run (`export_plan`), each run one streaming query read block by block:
    CSV and JSON as ClickHouse's own CSV / JSONEachRow output, Parquet as Native column blocks.

    * CSV: a header line, then the rows.
    * JSON: `{"data":[` + rows (JSONEachRow joined with commas) + `],"export_metadata":{…, "total_records":
      N}}` — the metadata comes last, once the rows are counted.
    * Parquet: pyarrow writes a row group per `row_group_rows` rows; each chunk is what it wrote since the
      last one, the footer last."""

    def __init__(
        self,
        client: Client,
        fmt: ExportFormat,
        scope: Scope,
        project_names: dict[str, str],
        *,
        json_metadata: dict[str, Any] | None = None,
        row_group_rows: int = 65_536,
        query_rows: int = EXPORT_QUERY_ROWS,
    ) -> None:
        self.fmt = fmt
        self.rows = 0
        self._client = client
        self._scope = scope
        self._names = project_names
        self._meta = json_metadata or {}
        self._runs = export_plan(client, scope, query_rows)
        self._source: Any = None  # the open query: a raw stream (csv, json) or a block iterator (parquet)
        self._ctx: Any = None
        self._done = False
        self._started = False
        self._first_row = True
        self._tail = b""
        if fmt == "parquet":
            self._sink = _Drain()
            self._writer = pq.ParquetWriter(self._sink, EXPORT_SCHEMA, compression="zstd")
            self._pending: list[pa.RecordBatch] = []
            self._pending_rows = 0
            self._row_group = row_group_rows

    def _open_next(self) -> bool:
        """Open the next run's query; False when there is none left."""
        self._close_source()
        if not self._runs:
            return False
        first, last = self._runs.pop(0)
        s = self._scope
        sql, params = export_query(Scope(s.org_id, first, last, s.project_id, s.model), self._names)
        if self.fmt == "parquet":
            self._ctx = self._client.query_column_block_stream(sql, parameters=params)
            self._source = iter(self._ctx.__enter__())
        else:
            self._source = self._client.raw_stream(
                sql, parameters=params, fmt="CSV" if self.fmt == "csv" else "JSONEachRow"
            )
        return True

    def _read(self) -> bytes:
        """The next block of the current run's raw output, moving on to the next run as they end."""
        while True:
            if self._source is not None:
                data = self._source.read(1 << 20)
                if data:
                    return data
            if not self._open_next():
                return b""

    def next_chunk(self) -> bytes:
        if self._done:
            return b""
        if self.fmt == "csv":
            return self._csv()
        if self.fmt == "json":
            return self._json()
        return self._parquet()

    # CSV ---------------------------------------------------------------------------------------------
    def _csv(self) -> bytes:
        head = b""
        if not self._started:
            self._started = True
            head = (",".join(EXPORT_COLUMNS) + "\n").encode()
        data = self._read()
        if not data:
            self._finish()
            return head
        self.rows += data.count(b"\n")
        return head + data

    # JSON --------------------------------------------------------------------------------------------
    def _json(self) -> bytes:
        out = []
        if not self._started:
            self._started = True
            out.append(b'{"data":[')
        while True:
            data = self._read()
            if not data:
                if self._tail.strip():  # JSONEachRow ends every row with a newline: cannot happen
                    out.append(self._json_rows(self._tail + b"\n"))
                self._finish()
                meta = {**self._meta, "total_records": self.rows}
                out.append(b'],"export_metadata":' + orjson.dumps(meta) + b"}")
                return b"".join(out)
            data = self._tail + data
            cut = data.rfind(b"\n") + 1
            self._tail = data[cut:]
            if cut:
                out.append(self._json_rows(data[:cut]))
                return b"".join(out)

    def _json_rows(self, lines: bytes) -> bytes:
        """Complete JSONEachRow lines → array elements separated by commas."""
        body = lines[:-1].replace(b"\n", b",\n")
        sep = b"" if self._first_row else b",\n"
        self._first_row = False
        self.rows += lines.count(b"\n")
        return sep + body

    # Parquet -----------------------------------------------------------------------------------------
    def _parquet(self) -> bytes:
        while True:
            block = next(self._source, None) if self._source is not None else None
            if block is None:
                if self._open_next():
                    continue
                self._flush_row_group()
                self._writer.close()
                self._finish()
                return self._sink.take()
            batch = _parquet_batch(block)
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
            self.rows += batch.num_rows
            if self._pending_rows >= self._row_group:
                self._flush_row_group()
                return self._sink.take()

    def _flush_row_group(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending), row_group_size=self._pending_rows)
            self._pending, self._pending_rows = [], 0

    def _finish(self) -> None:
        self._done = True
        self.close()

    def _close_source(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)
        elif self._source is not None:
            self._source.close()
        self._source = None

    def close(self) -> None:
        self._runs = []
        self._close_source()


EXPORT_SCHEMA = pa.schema(
    [
        ("date", pa.date32()),
        ("model", pa.string()),
        ("provider", pa.string()),
        ("project_name", pa.string()),
        ("input_tokens_uncached", pa.int64()),
        ("input_tokens_cached", pa.int64()),
        ("input_tokens_cache_creation", pa.int64()),
        ("output_tokens", pa.int64()),
        ("energy_j", pa.float64()),
        ("co2_kg", pa.float64()),
        ("co2_kg_low", pa.float64()),
        ("co2_kg_high", pa.float64()),
        ("factors_version", pa.string()),
    ]
)


def _parquet_batch(block: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    arrays = []
    for field, col in zip(EXPORT_SCHEMA, block, strict=True):
        if isinstance(col, array.array):  # numeric columns arrive as array.array: no per-value conversion
            col = np.frombuffer(col, dtype=col.typecode)
        arrays.append(pa.array(col, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=EXPORT_SCHEMA)


class _Drain(io.RawIOBase):
    """A write-only file whose content is taken (and forgotten) chunk by chunk."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        data = bytes(b)
        self._parts.append(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts = []
        return out


def open_export(
    client: Client,
    scope: Scope,
    fmt: ExportFormat,
    project_names: dict[str, str],
    *,
    json_metadata: dict[str, Any] | None = None,
) -> ExportStream:
    return ExportStream(client, fmt, scope, project_names, json_metadata=json_metadata)


def iter_export(
    client: Client, scope: Scope, fmt: ExportFormat, project_names: dict[str, str]
) -> Iterator[bytes]:
    """The whole export body, synchronously (tools, tests)."""
    stream = open_export(client, scope, fmt, project_names)
    try:
        while chunk := stream.next_chunk():
            yield chunk
    finally:
        stream.close()
