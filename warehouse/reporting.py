"""Reads behind the metrics and report API (`/api/v1/metrics/*`, `/api/v1/report/*`) and the KPI cache.

Every figure is a sum over the rollups (`usage_hourly`, `usage_daily`; migration 0004 keys them by project,
workload, provider, model, region, routing tier, factor version and source) over a `core.windows.Window` —
whole UTC hours, so any window is exactly a set of rollup rows. The daily rollup serves windows that start and
end at midnight when no hourly bucket is asked for; the hourly rollup serves the rest. Both sum the same
ledger rows, so the choice never changes a figure beyond float rounding.

Groups whose events cancelled out (`events = 0`, e.g. a revision that moved an event elsewhere) are dropped.
The sums are then shown in one vocabulary (`figures`), the same for a /metrics row, a series point, the
summary, by-project, top-N and the report file, so a client learns the names once:

    requests, events, input_tokens, cached_input_tokens, cache_creation_tokens, output_tokens, total_tokens,
    joules (+_low/_high), energy_kwh (+_low/_high), co2e_grams (Scope 2 location-based, +_low/_high),
    co2e_market_grams (Scope 2 market-based), embodied_co2e_grams (Scope 3, hardware), total_co2e_all_scopes
    (location + embodied), total_co2e_all_scopes_market (market + embodied), water_ml, total_cost (USD),
    co2e_cached_savings_grams, grid_intensity (gCO2e/kWh, energy-weighted), pue (energy-weighted),
    measured_events, estimated_events, measured_energy_share, coverage

A v2 figure (market-based, embodied, water, cost) that no event of the group carries is None, never a 0 that
would read as measured (`warehouse.measures.present`); an empty bucket of a series is all zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from clickhouse_connect.driver import Client

from core.methodology import joules_to_kwh
from core.windows import Granularity, Window
from warehouse.measures import (
    BY_NAME,
    LEDGER_SUMS,
    ORG_ROLLUP_KEYS,
    ROLLUP_MEASURES,
    TOKEN_COLUMNS,
    present,
    rollup_key_sql,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# group_by name → rollup key column
DIMENSIONS: dict[str, str] = {
    "project": "project_id",
    "workload": "workload_id",
    "provider": "provider",
    "model": "model",
    "model_tier": "model_tier",
    "region": "region",
    "routing_tier": "routing_tier",
    "factors_version": "factors_version",
}
Dimension = Literal[
    "project", "workload", "provider", "model", "model_tier", "region", "routing_tier", "factors_version"
]
# what top-N ranks by → the measure
RANK_MEASURES: dict[str, str] = {"co2": "co2_kg", "cost": "cost_usd", "energy": "energy_j"}
_SUMS = ", ".join(f"sum({c}) AS {c}" for c in ROLLUP_MEASURES)
# One thread per query: the same rows give the same float sums to the bit from one request to the next.
_SAME_SUMS = {"max_threads": 1}


def _dt(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=int(seconds))


@dataclass(frozen=True)
class Query:
    """What to sum: one org's window, optionally one project, by bucket and/or dimensions."""

    org_id: str
    window: Window
    granularity: Granularity | None = None  # None: no time bucket (totals over the window)
    group_by: tuple[str, ...] = ()  # rollup key columns (DIMENSIONS' values)
    project_id: str | None = None

    @property
    def table(self) -> tuple[str, str]:
        """(rollup table, its bucket column): the org daily rollup when neither a project nor a per-project key
        is asked for, else the daily one, when the window is whole days and no hourly bucket is asked for;
        else the hourly one."""
        if self.window.day_aligned and self.granularity != "hour":
            if self.project_id is None and set(self.group_by) <= set(ORG_ROLLUP_KEYS):
                return "usage_daily_org", "day"
            return "usage_daily", "day"
        return "usage_hourly", "hour"

    def bucket_sql(self) -> str | None:
        """Epoch seconds of each row's bucket start, or None without a granularity."""
        if self.granularity is None:
            return None
        _, col = self.table
        if self.granularity == "hour":
            return f"toUnixTimestamp({col})"
        day = col if col == "day" else f"toDate({col})"
        start = {"day": day, "week": f"toMonday({day})", "month": f"toStartOfMonth({day})"}.get(
            self.granularity, f"toStartOfYear({day})"
        )
        return f"toUnixTimestamp(toDateTime({start}, 'UTC'))"

    def where(self) -> tuple[str, dict[str, Any]]:
        _, col = self.table
        params: dict[str, Any] = {
            "org_id": self.org_id,
            "lo": int(self.window.start.timestamp()),
            "hi": int(self.window.end.timestamp()),
        }
        if col == "day":
            rng = f"{col} >= toDate(toDateTime({{lo:Int64}}, 'UTC')) AND {col} < toDate(toDateTime({{hi:Int64}}, 'UTC'))"
        else:
            rng = f"{col} >= toDateTime({{lo:Int64}}, 'UTC') AND {col} < toDateTime({{hi:Int64}}, 'UTC')"
        parts = ["org_id = {org_id:String}", rng]
        if self.project_id is not None:
            parts.append("project_id = {project_id:String}")
            params["project_id"] = self.project_id
        return " AND ".join(parts), params

    def grouped_sql(self, *, extra: str = "") -> tuple[str, dict[str, Any], list[str]]:
        """SELECT [bucket,] keys, sums … GROUP BY … HAVING events != 0 (unordered); and the key names."""
        table, _ = self.table
        where, params = self.where()
        keys: list[str] = []
        select: list[str] = []
        bucket = self.bucket_sql()
        if bucket is not None:
            select.append(f"{bucket} AS bucket")
            keys.append("bucket")
        select.extend(self.group_by)
        keys.extend(self.group_by)
        group = f" GROUP BY {', '.join(keys)}" if keys else ""
        sql = f"SELECT {', '.join([*select, _SUMS])}{extra} FROM {table} WHERE {where}{group} HAVING events != 0"
        return sql, params, keys


def _rows(client: Client, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in client.query(sql, parameters=params, settings=_SAME_SUMS).named_results():
        if "bucket" in r:
            r["bucket"] = _dt(r["bucket"])
        out.append(r)
    return out


def sums(client: Client, q: Query, *, order: str | None = None) -> list[dict[str, Any]]:
    """The measure sums of `q`, one dict per (bucket, keys) group with events != 0 — ordered by bucket then
    keys unless `order` (SQL) says otherwise."""
    sql, params, keys = q.grouped_sql()
    by = order or ", ".join(keys)
    return _rows(client, sql + (f" ORDER BY {by}" if by else ""), params)


def totals(client: Client, q: Query) -> dict[str, Any]:
    """The window's sums (no bucket, no group); all zeros when nothing is in it."""
    q = Query(q.org_id, q.window, None, (), q.project_id)
    rows = sums(client, q)
    return rows[0] if rows else zero_sums()


def page(client: Client, q: Query, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """One page of `q`'s groups, newest bucket first then by keys, and the number of groups."""
    sql, params, keys = q.grouped_sql()
    total = int(client.query(f"SELECT count() FROM ({sql})", parameters=params).result_rows[0][0])
    order = ", ".join(f"{k} DESC" if k == "bucket" else k for k in keys)
    params = {**params, "offset": int(offset), "limit": int(limit)}
    rows = _rows(client, f"{sql} ORDER BY {order} LIMIT {{limit:UInt64}} OFFSET {{offset:UInt64}}", params)
    return rows, total


def top(client: Client, q: Query, measure: str, limit: int) -> list[dict[str, Any]]:
    """The `limit` groups of `q` with the largest `measure` (ties by keys)."""
    sql, params, keys = q.grouped_sql()
    params = {**params, "limit": int(limit)}
    return _rows(client, f"{sql} ORDER BY {measure} DESC, {', '.join(keys)} LIMIT {{limit:UInt64}}", params)


def factor_versions(client: Client, q: Query) -> dict[tuple[Any, ...], list[str]]:
    """(bucket?, keys…) → the factor versions of the group's live events, sorted (a version whose rows all
    cancelled — e.g. re-enriched under a newer one — is not listed)."""
    inner = Query(q.org_id, q.window, q.granularity, (*q.group_by, "factors_version"), q.project_id)
    sql, params, keys = inner.grouped_sql()
    outer = [k for k in keys if k != "factors_version"]
    group = f" GROUP BY {', '.join(outer)}" if outer else ""
    found = client.query(
        f"SELECT {', '.join([*outer, 'arraySort(groupArray(factors_version))'])} FROM ({sql}){group}",
        parameters=params,
    ).result_rows
    out: dict[tuple[Any, ...], list[str]] = {}
    for row in found:
        key = tuple(_dt(v) if k == "bucket" else v for k, v in zip(outer, row[:-1], strict=True))
        out[key] = list(row[-1])
    return out


def ledger_where(q: Query) -> tuple[str, dict[str, Any]]:
    """The WHERE clause over the ledger `usage_events AS e` for `q`'s org, window (on bucket_start, the
    primary key after org_id) and project."""
    params: dict[str, Any] = {
        "org_id": q.org_id,
        "lo": int(q.window.start.timestamp()),
        "hi": int(q.window.end.timestamp()),
    }
    where = (
        "e.org_id = {org_id:String} AND e.bucket_start >= toDateTime64({lo:Int64}, 3, 'UTC') "
        "AND e.bucket_start < toDateTime64({hi:Int64}, 3, 'UTC')"
    )
    if q.project_id is not None:
        where += " AND e.project_id = {project_id:String}"
        params["project_id"] = q.project_id
    return where, params


def estimation_reasons(
    client: Client, q: Query, keys: Sequence[str] = ()
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """(bucket?, keys…) → [{reason, event_count}] of the live events of `q`'s window, most frequent first,
    from the signed ledger (reasons are not additive: no rollup holds them)."""
    where, params = ledger_where(q)
    select: list[str] = []
    if q.granularity is not None:
        start = {
            "hour": "toStartOfHour(e.bucket_start)",
            "day": "toStartOfDay(e.bucket_start)",
            "week": "toDateTime(toMonday(e.bucket_start), 'UTC')",
            "month": "toDateTime(toStartOfMonth(e.bucket_start), 'UTC')",
            "year": "toDateTime(toStartOfYear(e.bucket_start), 'UTC')",
        }[q.granularity]
        select.append(f"toUnixTimestamp({start}) AS bucket")
    select.extend(f"{rollup_key_sql(k)} AS {k}" for k in keys)
    names = [*(["bucket"] if q.granularity is not None else []), *keys]
    group = ", ".join([*names, "reason"])
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in client.query(
        f"SELECT {', '.join([*select, 'reason', 'sum(toInt64(e.sign)) AS n'])} FROM usage_events AS e "
        f"ARRAY JOIN e.estimation_reasons AS reason WHERE {where} GROUP BY {group} HAVING n != 0 "
        "ORDER BY n DESC, reason",
        parameters=params,
    ).result_rows:
        key = tuple(_dt(v) if k == "bucket" else v for k, v in zip(names, row[: len(names)], strict=True))
        out.setdefault(key, []).append({"reason": row[-2], "event_count": int(row[-1])})
    return out


# ------------------------------------------------------------------------------------------ vocabulary


def zero_sums() -> dict[str, Any]:
    return {c: 0 if BY_NAME[c].is_int else 0.0 for c in ROLLUP_MEASURES}


def _g(kg: float | None) -> float | None:
    return None if kg is None else kg * 1000.0


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def figures(s: Mapping[str, Any]) -> dict[str, Any]:
    """One group's sums (rollup measure names) in the report vocabulary (module docstring). A group of zero
    events (an empty bucket) is all zeros."""
    empty = int(s["events"]) == 0
    v = dict(s) if empty else present(s)
    energy, energy_it = float(s["energy_j"]), float(s["energy_it_j"])
    kwh = joules_to_kwh(energy)
    co2 = float(s["co2_kg"])
    out: dict[str, Any] = {
        "events": int(s["events"]),
        "requests": int(s["request_count"]),
        "input_tokens": int(s["input_tokens_uncached"]),
        "cached_input_tokens": int(s["input_tokens_cached"]),
        "cache_creation_tokens": int(s["input_tokens_cache_creation"]),
        "output_tokens": int(s["output_tokens"]),
        "total_tokens": sum(int(s[c]) for c in TOKEN_COLUMNS),
        "joules": energy,
        "joules_low": float(s["energy_j_low"]),
        "joules_high": float(s["energy_j_high"]),
        "energy_kwh": kwh,
        "energy_kwh_low": joules_to_kwh(float(s["energy_j_low"])),
        "energy_kwh_high": joules_to_kwh(float(s["energy_j_high"])),
        "co2e_grams": co2 * 1000.0,
        "co2e_grams_low": float(s["co2_kg_low"]) * 1000.0,
        "co2e_grams_high": float(s["co2_kg_high"]) * 1000.0,
    }
    for name, measure in (("co2e_market_grams", "co2_kg_market"), ("embodied_co2e_grams", "co2_kg_embodied")):
        out[name] = _g(v[measure])
        out[f"{name}_low"] = _g(v[f"{measure}_low"])
        out[f"{name}_high"] = _g(v[f"{measure}_high"])
    for suffix in ("", "_low", "_high"):
        embodied = out[f"embodied_co2e_grams{suffix}"]
        out[f"total_co2e_all_scopes{suffix}"] = _plus(out[f"co2e_grams{suffix}"], embodied)
        out[f"total_co2e_all_scopes_market{suffix}"] = _plus(out[f"co2e_market_grams{suffix}"], embodied)
    for suffix in ("", "_low", "_high"):
        water = v[f"water_l{suffix}"]
        out[f"water_ml{suffix}"] = None if water is None else water * 1000.0
    out["total_cost"] = v["cost_usd"]
    out["co2e_cached_savings_grams"] = float(s["co2_cached_savings_kg"]) * 1000.0
    out["grid_intensity"] = co2 * 1000.0 / kwh if kwh > 0 else None
    out["pue"] = energy / energy_it if energy_it > 0 else None
    out["measured_events"] = int(s["events_measured"])
    out["estimated_events"] = int(s["events_estimated"])
    out["measured_energy_share"] = float(s["energy_j_measured"]) / energy if energy > 0 else 0.0
    out["coverage"] = {
        "co2e_market": int(s["events_market"]),
        "embodied_co2e": int(s["events_embodied"]),
        "water": int(s["events_water"]),
        "cost": int(s["events_cost"]),
    }
    return out


FIGURE_NAMES: tuple[str, ...] = tuple(k for k in figures(zero_sums()) if k != "coverage")


# ------------------------------------------------------------------------------------------ series

# the figures a series point carries unless `fields` asks for others (`fields=all`: every figure)
DEFAULT_POINT_FIELDS = (
    "events",
    "requests",
    "total_tokens",
    "joules",
    "energy_kwh",
    "co2e_grams",
    "co2e_grams_low",
    "co2e_grams_high",
    "co2e_market_grams",
    "embodied_co2e_grams",
    "total_co2e_all_scopes",
    "water_ml",
    "total_cost",
)


def _point(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    f = figures(row)
    return {"timestamp": row["bucket"], **{k: f[k] for k in fields}}


def series(
    rows: list[dict[str, Any]],
    w: Window,
    g: Granularity,
    keys: tuple[str, ...],
    fields: tuple[str, ...],
    max_series: int,
) -> list[dict[str, Any]]:
    """Rows (bucket, keys…, sums) → one series per key with a point per bucket of the window (empty buckets
    all zeros); the largest `max_series` series by location-based CO2e, the rest summed into one series whose
    key values are "other"."""
    buckets = w.buckets(g)
    groups: dict[tuple[Any, ...], dict[datetime, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), {})[r["bucket"]] = r
    if not keys:
        groups.setdefault((), {})  # one series, even over an empty window
    ranked = sorted(groups, key=lambda k: (-sum(r["co2_kg"] for r in groups[k].values()), k))
    kept, folded = ranked[:max_series], ranked[max_series:]
    if folded:
        other: dict[datetime, dict[str, Any]] = {}
        for k in folded:
            for b, r in groups[k].items():
                acc = other.setdefault(b, {**zero_sums(), "bucket": b})
                for c in ROLLUP_MEASURES:
                    acc[c] += r[c]
        groups[tuple("other" for _ in keys)] = other
        kept.append(tuple("other" for _ in keys))
    out = []
    for k in kept:
        pts = groups[k]
        out.append(
            {
                "key": dict(zip(keys, k, strict=True)),
                "points": [_point(pts.get(b) or {**zero_sums(), "bucket": b}, fields) for b in buckets],
            }
        )
    return out


def ledger_sums(client: Client, q: Query) -> dict[str, Any]:
    """The window's sums straight from the signed ledger (sum of sign × value over its rows): the reference
    the rollup-based figures must equal."""
    where, params = ledger_where(q)
    cols = ", ".join(f"{LEDGER_SUMS[c]} AS {c}" for c in ROLLUP_MEASURES)
    return next(iter(_rows(client, f"SELECT {cols} FROM usage_events AS e WHERE {where}", params)))


# ------------------------------------------------------------------------------------------ report rows

# The report file's columns (ESRS E1): the period (clipped to the window), the project when grouped by
# project, the figures, then the factor versions of the period's live events.
REPORT_FIGURES: tuple[str, ...] = (
    "events",
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_creation_tokens",
    "output_tokens",
    "total_tokens",
    "energy_kwh",
    "energy_kwh_low",
    "energy_kwh_high",
    "joules",
    "joules_low",
    "joules_high",
    "co2e_grams",
    "co2e_grams_low",
    "co2e_grams_high",
    "co2e_market_grams",
    "co2e_market_grams_low",
    "co2e_market_grams_high",
    "embodied_co2e_grams",
    "embodied_co2e_grams_low",
    "embodied_co2e_grams_high",
    "total_co2e_all_scopes",
    "total_co2e_all_scopes_low",
    "total_co2e_all_scopes_high",
    "total_co2e_all_scopes_market",
    "total_co2e_all_scopes_market_low",
    "total_co2e_all_scopes_market_high",
    "water_ml",
    "water_ml_low",
    "water_ml_high",
    "total_cost",
    "measured_energy_share",
    "estimated_energy_share",
    "measured_events",
    "estimated_events",
    "coverage_co2e_market",
    "coverage_embodied_co2e",
    "coverage_water",
    "coverage_cost",
)


def report_columns(by_project: bool) -> tuple[str, ...]:
    keys = ("period_start", "period_end", *(("project_id", "project") if by_project else ()))
    return (*keys, *REPORT_FIGURES, "factors_versions")


def estimated_part(sums: Mapping[str, Any]) -> dict[str, Any]:
    """Whether any live event of the sums is an estimate, and their share of the events (0 … 1)."""
    events, estimated = int(sums["events"]), int(sums["events_estimated"])
    return {"is_estimated": estimated > 0, "estimated_share": estimated / events if events else 0.0}


def report_figures(sums: Mapping[str, Any]) -> dict[str, Any]:
    """`figures`, with the estimated share of energy beside the measured one (the report's totals)."""
    f = figures(sums)
    f["estimated_energy_share"] = 1.0 - f["measured_energy_share"] if f["joules"] > 0 else 0.0
    return f


def report_row(sums: Mapping[str, Any]) -> dict[str, Any]:
    """A report row's figures from its sums (`report_figures`, flattened: coverage counts as columns)."""
    f = report_figures(sums)
    for k, n in f.pop("coverage").items():
        f[f"coverage_{k}"] = n
    return {k: f[k] for k in REPORT_FIGURES}


# the report figures that are counts (int64 in Parquet)
REPORT_INT_FIGURES: frozenset[str] = frozenset(
    k for k, v in report_row(zero_sums()).items() if isinstance(v, int)
)


def report_sums(
    client: Client, org_id: str, w: Window, granularity: Granularity, project_id: str | None, by_project: bool
) -> list[dict[str, Any]]:
    """The report's groups of one window: sums per bucket (and project), each with `factors_versions` (the
    versions of its live events, sorted). Every bucket is present when not grouped by project (an empty one
    as zeros); grouped, only the (bucket, project) pairs with events. Ordered by bucket (then project id)."""
    q = Query(org_id, w, granularity, ("project_id",) if by_project else (), project_id)
    rows = sums(client, q)
    versions = factor_versions(client, q)
    keys = ("bucket", *q.group_by)
    for r in rows:
        r["factors_versions"] = versions.get(tuple(r[k] for k in keys), [])
    return rows if by_project else every_period(rows, w, granularity)


def every_period(rows: list[dict[str, Any]], w: Window, granularity: Granularity) -> list[dict[str, Any]]:
    """`rows` (one per bucket) with every bucket of the window present, an empty one as zeros."""
    found = {r["bucket"]: r for r in rows}
    return [
        found.get(b) or {**zero_sums(), "bucket": b, "factors_versions": []} for b in w.buckets(granularity)
    ]
