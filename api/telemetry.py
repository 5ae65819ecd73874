"""The telemetry protocol the API reads warehouse figures through (injected into `create_app`), and the null one.

`TelemetryProvider` is the one interface of the dashboard's figures: totals per project, the summary, the
event list, the per-model list and the export file. Its implementation over the ClickHouse warehouse is
`api.telemetry_provider.WarehouseTelemetry`; `NullTelemetry` answers zeros and empty lists so the API works
without a warehouse. Date ranges are inclusive calendar days in UTC. `project_totals` and `summary` may be
plain (run in a worker thread) or `async def` (awaited); so may `events` and `models`; `export` is an async
iterator of the file's chunks.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any, Protocol

import orjson
import pyarrow.parquet as pq

from core.methodology import joules_to_kwh
from warehouse.export import EXPORT_COLUMNS, EXPORT_SCHEMA, ExportFormat
from warehouse.measures import BY_NAME, columns, present
from warehouse.telemetry import DailyModelRow, Estimation, Scope, estimation_fields, v2_fields

DENSE_CHART_MAX_DAYS = 400  # daily_chart lists every day of the period up to this length, else active days


class TelemetryProvider(Protocol):
    def project_totals(
        self, org_id: str, project_ids: Sequence[str], start: date, end: date
    ) -> dict[str, float] | Awaitable[dict[str, float]]:
        """project id → total CO2e (kg) in [start, end]. Missing ids count as 0."""
        ...

    def summary(
        self, org_id: str, project_id: str | None, start: date, end: date
    ) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """Dashboard summary for one project (or the whole org when project_id is None), in [start, end].
        At least: total_co2_kg, total_tokens, per_model (list), daily_chart (list); more keys are passed
        through to the client as they are."""
        ...

    def events(
        self, scope: Scope, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int] | Awaitable[tuple[list[dict[str, Any]], int]]:
        """One page of live events, newest first, and the number of live events in scope."""
        ...

    def models(self, scope: Scope) -> list[dict[str, Any]] | Awaitable[list[dict[str, Any]]]:
        """Per (provider, model) usage, largest CO2e first."""
        ...

    def export(
        self, scope: Scope, fmt: ExportFormat, project_names: dict[str, str], metadata: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        """The export file (`warehouse.export`), chunk by chunk; `metadata` goes into the JSON format's
        `export_metadata`."""
        ...


def empty_summary() -> dict[str, Any]:
    return {
        "total_co2_kg": 0.0,
        "total_co2_lower_bound_kg": 0.0,
        "total_co2_upper_bound_kg": 0.0,
        "total_tokens": 0,
        "per_model": [],
        "daily_chart": [],
    }


class NullTelemetry:
    """No warehouse: every total is zero, every list empty, every export a file without rows."""

    def project_totals(
        self, org_id: str, project_ids: Sequence[str], start: date, end: date
    ) -> dict[str, float]:
        return {pid: 0.0 for pid in project_ids}

    def summary(self, org_id: str, project_id: str | None, start: date, end: date) -> dict[str, Any]:
        return empty_summary()

    def events(self, scope: Scope, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        return [], 0

    def models(self, scope: Scope) -> list[dict[str, Any]]:
        return []

    async def export(
        self, scope: Scope, fmt: ExportFormat, project_names: dict[str, str], metadata: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        if fmt == "csv":
            yield (",".join(EXPORT_COLUMNS) + "\n").encode()
        elif fmt == "json":
            yield orjson.dumps({"data": [], "export_metadata": {**metadata, "total_records": 0}})
        else:
            buf = io.BytesIO()
            pq.write_table(EXPORT_SCHEMA.empty_table(), buf)
            yield buf.getvalue()


# --------------------------------------------------------------------------------------------- summary


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)) or (0,)


def build_summary(
    rows: Sequence[DailyModelRow],
    start: date,
    end: date,
    estimation: Mapping[tuple[str, str], Estimation] | None = None,
) -> dict[str, Any]:
    """The dashboard summary from the daily rollup grouped by (day, provider, model, factors_version), and the
    estimation of each model's events (`warehouse.telemetry.estimation`)."""
    estimation = estimation or {}
    sums = _zeros()
    model_sums: dict[tuple[str, str], dict[str, Any]] = {}
    per_model: dict[tuple[str, str], dict[str, Any]] = {}
    per_day: dict[date, dict[str, Any]] = {}
    versions: set[str] = set()
    for r in rows:
        ms = model_sums.setdefault((r.provider, r.model), _zeros())
        for c in _DASHBOARD:
            value = getattr(r, c)
            sums[c] += value
            ms[c] += value
        versions.add(r.factors_version)
        m = per_model.setdefault(
            (r.provider, r.model),
            {"model": r.model, "provider": r.provider, "total_tokens": 0, "co2_kg": 0.0, "event_count": 0},
        )
        m["total_tokens"] += r.total_tokens
        m["co2_kg"] += r.co2_kg
        m["event_count"] += r.events
        d = per_day.setdefault(r.day, {"date": r.day, "co2_kg": 0.0, "tokens": 0})
        d["co2_kg"] += r.co2_kg
        d["tokens"] += r.total_tokens
    co2 = sums["co2_kg"]
    models_out = sorted(per_model.values(), key=lambda m: (-m["co2_kg"], m["provider"], m["model"]))
    total_est = Estimation()
    for m in models_out:
        key = (m["provider"], m["model"])
        m["percentage"] = round(100.0 * m["co2_kg"] / co2, 2) if co2 > 0 else 0.0
        shown = present(model_sums[key])
        m.update({f: shown[c] for f, c in _MODEL_V2.items()})
        m.update(estimation_fields(estimation.get(key), m["event_count"]))
        total_est.add(estimation.get(key) or Estimation())
    if (end - start).days < DENSE_CHART_MAX_DAYS:
        chart = [
            per_day.get(day, {"date": day, "co2_kg": 0.0, "tokens": 0})
            for day in (start + timedelta(days=i) for i in range((end - start).days + 1))
        ]
    else:
        chart = [per_day[day] for day in sorted(per_day)]
    ordered_versions = sorted(versions, key=_version_key)
    inputs = sums["input_tokens_uncached"] + sums["input_tokens_cached"] + sums["input_tokens_cache_creation"]
    return {
        "total_co2_kg": co2,
        "total_co2_lower_bound_kg": sums["co2_kg_low"],
        "total_co2_upper_bound_kg": sums["co2_kg_high"],
        **v2_fields(sums),
        "total_tokens": inputs + sums["output_tokens"],
        "input_tokens": inputs,
        "output_tokens": sums["output_tokens"],
        "total_energy_kwh": joules_to_kwh(sums["energy_j"]),
        "event_count": sums["events"],
        **estimation_fields(total_est, sums["events"]),
        "cached_vs_uncached": {
            "uncached_tokens": sums["input_tokens_uncached"],
            "cached_tokens": sums["input_tokens_cached"],
            "cache_creation_tokens": sums["input_tokens_cache_creation"],
            "cached_co2_savings_kg": sums["co2_cached_savings_kg"],
        },
        "per_model": models_out,
        "daily_chart": chart,
        "factors_version": ordered_versions[-1] if ordered_versions else None,
        "factors_versions": ordered_versions,
        "period": {"start": start.isoformat(), "end": end.isoformat()},
    }


_DASHBOARD = columns("dashboard")


def _zeros() -> dict[str, Any]:
    return {c: 0 if BY_NAME[c].is_int else 0.0 for c in _DASHBOARD}


# per-model keys of the summary → the measure they show (None when no event of the model carries it)
_MODEL_V2 = {
    "co2_market_kg": "co2_kg_market",
    "co2_embodied_kg": "co2_kg_embodied",
    "water_l": "water_l",
    "cost_usd": "cost_usd",
}
