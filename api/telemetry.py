"""The telemetry provider the API reads warehouse figures through (injected into `create_app`).

The real implementation lives with the warehouse queries (ClickHouse); `NullTelemetry` answers zeros so the
API works without a warehouse. Date ranges are inclusive calendar days in UTC. Methods may be plain (run
in a worker thread) or `async def` (awaited).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from datetime import date
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
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
    """No warehouse: every total is zero."""

    def project_totals(
        self, org_id: str, project_ids: Sequence[str], start: date, end: date
    ) -> dict[str, float]:
        return {pid: 0.0 for pid in project_ids}

    def summary(self, org_id: str, project_id: str | None, start: date, end: date) -> dict[str, Any]:
        return empty_summary()
