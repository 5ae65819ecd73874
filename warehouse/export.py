"""The telemetry export file: one row per day × project × provider × model × factor version of the daily
rollup, as CSV, JSON or Parquet, streamed.

`ExportStream` splits the window into runs of whole days (~64k rollup rows each, `export_plan`) and reads each
run's query block by block (CSV and JSON as ClickHouse's own output, Parquet as Native column blocks), so
neither ClickHouse (one run aggregated and sorted at a time) nor Python (one block at a time) holds memory
that grows with the export; a single GROUP BY over a long window of a big org would aggregate every group at
once (bench/api.py measures both). On the embedded engine a streaming query holds its client handle until
closed, so exports run on their own client (`stream_client`), never on the one serving the other queries.
The columns are the `export` measures of `warehouse.measures` between the keys and the factor version, then
how the row was estimated: `is_estimated` (any of its live events fell back to a default), `estimated_events`
and `estimation_reasons` (the distinct reasons of its live events, sorted, joined with "; " — a string in
every format), from the signed ledger. A v2 figure (market-based or embodied CO2e, water, cost) that no event
of the row carries is empty (CSV) / null (JSON, Parquet), never 0; its coverage count (`events_market`, …)
says how many of the row's events its sum covers. The estimated part of energy and CO2e is the total minus
the `*_measured` columns.
"""

from __future__ import annotations

import array
import io
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from clickhouse_connect.driver import Client

from warehouse.measures import BY_NAME, columns
from warehouse.telemetry import Scope

_SUMS = columns("export")
_ESTIMATION = ("is_estimated", "estimated_events", "estimation_reasons")
EXPORT_COLUMNS = ("date", "model", "provider", "project_name", *_SUMS, "factors_version", *_ESTIMATION)
EXPORT_SCHEMA = pa.schema(
    [
        ("date", pa.date32()),
        ("model", pa.string()),
        ("provider", pa.string()),
        ("project_name", pa.string()),
        *((c, pa.int64() if BY_NAME[c].is_int else pa.float64()) for c in _SUMS),
        ("factors_version", pa.string()),
        ("is_estimated", pa.bool_()),
        ("estimated_events", pa.int64()),
        ("estimation_reasons", pa.string()),
    ]
)
_KEYS = "day, project_id, provider, model, factors_version"
_LEDGER_KEYS = (
    "toDate(e.bucket_start) AS day, e.project_id AS project_id, e.provider AS provider, e.model AS model, "
    "e.factors_version AS factors_version"
)


def _shown(c: str) -> str:
    """The output expression of measure `c`: NULL for a v2 figure no event of the row carries."""
    cover = BY_NAME[c].coverage
    return f"if({cover} = 0, NULL, {c}) AS {c}" if cover else c


ExportFormat = Literal["csv", "json", "parquet"]


def export_query(scope: Scope, project_names: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The export rows of `scope`: the daily rollup per day × project × provider × model × factors version,
    in that order. project_name is the control-plane name (the project id when the control plane has
    none). Output settings: 64-bit integers unquoted in JSON, small blocks (bounded chunks)."""
    where, params = scope.where("daily", alias="d.")
    params["pids"] = list(project_names)
    params["pnames"] = list(project_names.values())
    ledger_where, _ = scope.where("ledger", alias="e.")
    sums = ", ".join(f"sum(d.{c}) AS {c}" for c in _SUMS)
    cols = ", ".join(_shown(c) for c in _SUMS)
    sql = (
        "SELECT day AS date, model, provider, "
        "transform(project_id, {pids:Array(String)}, {pnames:Array(String)}, project_id) AS project_name, "
        f"{cols}, factors_version, toBool(estimated_events > 0) AS is_estimated, estimated_events, "
        "estimation_reasons FROM ("
        "SELECT d.day AS day, d.project_id AS project_id, d.provider AS provider, d.model AS model, "
        f"d.factors_version AS factors_version, sum(d.events) AS events, {sums} "
        f"FROM usage_daily AS d WHERE {where} "
        f"GROUP BY {_KEYS} HAVING events != 0) AS r "
        # live estimated events per row (sum of signs) and their distinct reasons, from the ledger
        f"LEFT JOIN (SELECT {_LEDGER_KEYS}, sumIf(toInt64(e.sign), e.is_estimated) AS estimated_events "
        f"FROM usage_events AS e WHERE {ledger_where} GROUP BY {_KEYS}) AS est USING ({_KEYS}) "
        f"LEFT JOIN (SELECT {_KEYS}, arrayStringConcat(arraySort(groupArray(reason)), '; ') "
        f"AS estimation_reasons FROM (SELECT {_LEDGER_KEYS}, reason, sum(toInt64(e.sign)) AS n "
        f"FROM usage_events AS e ARRAY JOIN e.estimation_reasons AS reason WHERE {ledger_where} "
        f"GROUP BY {_KEYS}, reason HAVING n > 0) GROUP BY {_KEYS}) AS why USING ({_KEYS}) "
        "ORDER BY date, project_id, provider, model, factors_version "
        f"SETTINGS max_block_size = {EXPORT_BLOCK_ROWS}, output_format_json_quote_64bit_integers = 0, "
        "output_format_json_quote_64bit_floats = 0, format_csv_null_representation = '', join_use_nulls = 0"
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
