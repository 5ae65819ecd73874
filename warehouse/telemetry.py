"""Read queries behind the dashboard API's telemetry endpoints (summary, projects, models, events).

* Sums come from the rollups (`usage_daily_org` for a whole org, `usage_daily`, `usage_hourly`), aggregated with sum() … GROUP BY and groups
  whose events cancelled out (`events = 0`) dropped — exact without merges or FINAL. Which measures each
  reader sums comes from `warehouse.measures`.
* Event lists come from the signed ledger `usage_events`: an event is listed once per *live* revision, i.e. a
  (event_id, revision) whose rows sum to sign 1 (`GROUP BY … HAVING sum(sign) = 1`); a cancelled revision
  (+1 then −1) never shows, nor counts.
* Every query is scoped by `org_id` (the tenancy invariant): `Scope.org_id` is required.
* Date ranges are **inclusive** calendar days in UTC, `start <= day <= end`, either side optional. They are
  clamped to ClickHouse's `Date` range (1970-01-01 … 2149-06-06) so any ISO date is a valid bound.
* Times are returned as epoch milliseconds / seconds from SQL and turned into aware UTC datetimes here (the
  chdb engine may drop the zone of `DateTime('UTC')` columns in its output).

* v2 figures (market-based and embodied CO2e, water, cost) sum as 0 over events that lack them; each has a
  coverage count (`warehouse.measures`), and `warehouse.measures.present` turns a sum no event carries into
  None. `estimation` says, per model, how many live events are estimates and why (their distinct
  `estimation_reasons`), straight from the ledger: those are not additive figures a rollup could hold.

The export file is `warehouse.export`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, make_dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from clickhouse_connect.driver import Client

from core.methodology import joules_to_kwh
from warehouse.measures import BY_NAME, TOKEN_COLUMNS, columns, present

MIN_DAY = date(1970, 1, 1)  # ClickHouse Date range
MAX_DAY = date(2149, 6, 6)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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

    @property
    def daily_table(self) -> str:
        """The daily rollup to read: the org-level one (no project, no workload: far fewer rows) unless a
        project is asked for."""
        return "usage_daily" if self.project_id is not None else "usage_daily_org"


# --------------------------------------------------------------------------------------------- summary

_DAILY_KEYS: tuple[tuple[str, type], ...] = (
    ("day", date),
    ("provider", str),
    ("model", str),
    ("factors_version", str),
)
_DAILY_SUMS = columns("dashboard")


def _total_tokens(self: Any) -> int:
    return sum(getattr(self, c) for c in TOKEN_COLUMNS)


# Sums of one (day, provider, model, factors_version) group of the daily rollup: the keys, then the
# `dashboard` measures (warehouse.measures), and `total_tokens`.
DailyModelRow = make_dataclass(
    "DailyModelRow",
    [*_DAILY_KEYS, *((c, int if BY_NAME[c].is_int else float) for c in _DAILY_SUMS)],
    frozen=True,
    namespace={"total_tokens": property(_total_tokens), "__module__": __name__},
)


def daily_by_model(client: Client, scope: Scope) -> list[DailyModelRow]:
    """The daily rollup grouped by (day, provider, model, factors_version): everything a dashboard summary
    needs (totals, bounds, cache split, per-model shares, daily chart) in one round trip."""
    where, params = scope.where("daily", alias="d.")
    keys = ", ".join(k for k, _ in _DAILY_KEYS)
    sums = ", ".join(f"sum(d.{c}) AS {c}" for c in _DAILY_SUMS)
    result = client.query(
        f"SELECT {', '.join(f'd.{k} AS {k}' for k, _ in _DAILY_KEYS)}, {sums} FROM {scope.daily_table} AS d "
        f"WHERE {where} GROUP BY {keys} HAVING events != 0 ORDER BY {keys}",
        parameters=params,
        settings=_SAME_SUMS,
    )
    return [DailyModelRow(*row) for row in result.result_rows]


# One thread sums each group's rollup rows in the parts' order, so the same rows give the same float sums to the
# bit from one request to the next (threads would add partial sums in whatever order they finish).
_SAME_SUMS = {"max_threads": 1}


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


# --------------------------------------------------------------------------------------------- estimation


@dataclass
class Estimation:
    """How the live events of one (provider, model) in scope were estimated: how many carry is_estimated, and
    each distinct estimation reason with the number of live events that give it."""

    estimated_events: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: Estimation) -> None:
        self.estimated_events += other.estimated_events
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n

    def reason_list(self) -> list[dict[str, Any]]:
        """[{reason, event_count}], most frequent first."""
        return [
            {"reason": r, "event_count": n}
            for r, n in sorted(self.reasons.items(), key=lambda x: (-x[1], x[0]))
        ]


def estimation(client: Client, scope: Scope) -> dict[tuple[str, str], Estimation]:
    """(provider, model) → Estimation of the live events in scope: how many are estimated from the daily rollup
    (`events_estimated`), their reasons from the signed ledger (sum of signs: a cancelled revision counts 0).
    Models without any estimated event are left out."""
    where, params = scope.where("daily", alias="d.")
    out: dict[tuple[str, str], Estimation] = {}
    for provider, model, n in client.query(
        "SELECT d.provider AS provider, d.model AS model, sum(d.events_estimated) AS n "
        f"FROM {scope.daily_table} AS d WHERE {where} GROUP BY provider, model HAVING n != 0",
        parameters=params,
    ).result_rows:
        out.setdefault((provider, model), Estimation()).estimated_events = int(n)
    where, params = scope.where("ledger", alias="e.")
    for provider, model, reason, n in client.query(
        "SELECT e.provider AS provider, e.model AS model, reason, sum(toInt64(e.sign)) AS n "
        f"FROM usage_events AS e ARRAY JOIN e.estimation_reasons AS reason WHERE {where} "
        "GROUP BY provider, model, reason HAVING n != 0",
        parameters=params,
    ).result_rows:
        out.setdefault((provider, model), Estimation()).reasons[reason] = int(n)
    return out


def summary_parts(
    client: Client, scope: Scope
) -> tuple[list[DailyModelRow], dict[tuple[str, str], Estimation]]:
    """What a dashboard summary needs: the daily rollup per model (`daily_by_model`) and the estimation."""
    return daily_by_model(client, scope), estimation(client, scope)


def estimation_fields(est: Estimation | None, events: int) -> dict[str, Any]:
    """The estimation keys of a per-model or summary row: is_estimated (any live event estimated), the count and
    share of estimated events, and the distinct reasons."""
    est = est or Estimation()
    return {
        "is_estimated": est.estimated_events > 0,
        "estimated_event_count": est.estimated_events,
        "estimated_share": round(est.estimated_events / events, 6) if events > 0 else 0.0,
        "estimation_reasons": est.reason_list(),
    }


def v2_fields(sums: dict[str, Any], prefix: str = "total_") -> dict[str, Any]:
    """The v2 keys of a per-model or summary row from its measure sums: market-based and embodied CO2e, water
    (each with bounds), cost — None when no event in the sum carries the figure — with the coverage counts,
    and the measured and estimated parts of energy and CO2e."""
    v = present(sums)
    out: dict[str, Any] = {}
    for name, label, unit in (
        ("co2_kg_market", "co2_market", "kg"),
        ("co2_kg_embodied", "co2_embodied", "kg"),
        ("water_l", "water", "l"),
    ):
        out[f"{prefix}{label}_{unit}"] = v[name]
        out[f"{prefix}{label}_lower_bound_{unit}"] = v[f"{name}_low"]
        out[f"{prefix}{label}_upper_bound_{unit}"] = v[f"{name}_high"]
    out[f"{prefix}cost_usd"] = v["cost_usd"]
    out["coverage"] = {
        "co2_market": int(sums["events_market"]),
        "co2_embodied": int(sums["events_embodied"]),
        "water": int(sums["events_water"]),
        "cost": int(sums["events_cost"]),
    }
    out["measured"] = {
        "event_count": int(sums["events_measured"]),
        "energy_kwh": joules_to_kwh(sums["energy_j_measured"]),
        "co2_kg": sums["co2_kg_measured"],
        "co2_kg_low": sums["co2_kg_measured_low"],
        "co2_kg_high": sums["co2_kg_measured_high"],
    }
    out["estimated"] = {  # the total minus the measured part (the whole total while nothing is measured)
        "event_count": int(sums["events"]) - int(sums["events_measured"]),
        "energy_kwh": joules_to_kwh(sums["energy_j"] - sums["energy_j_measured"]),
        "co2_kg": sums["co2_kg"] - sums["co2_kg_measured"],
        "co2_kg_low": sums["co2_kg_low"] - sums["co2_kg_measured_low"],
        "co2_kg_high": sums["co2_kg_high"] - sums["co2_kg_measured_high"],
    }
    return out


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
        f"{sums} FROM {scope.daily_table} AS d WHERE {where} GROUP BY provider, model, day HAVING events != 0) "
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
    est = estimation(client, scope)
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
                **v2_fields(r),
                **estimation_fields(est.get((r["provider"], r["model"])), int(r["events"])),
            }
        )
    out.sort(key=lambda m: (-m["total_co2_kg"], m["provider"], m["model"]))
    return out


_MODEL_SUMS = columns("models")


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
    *columns("events"),
    "energy_source",
    "measured_energy_j",
    "measured_by",
    "measured_boundary",
    "measured_uncertainty_pct",
    "price_source",
    "factors_version",
    "is_estimated",
    "estimation_reasons",
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
        f"SELECT d.day AS day, sum(d.events) AS n FROM {scope.daily_table} AS d WHERE {where} "
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
