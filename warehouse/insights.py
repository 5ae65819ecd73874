"""Reads behind the insights engine (`core.insights`): the window's usage per project × provider × model ×
region × routing tier × workload × source, summed from the rollups (`warehouse.reporting`), and the org's estimation reasons."""

from __future__ import annotations

from datetime import date
from typing import Any

from clickhouse_connect.driver import Client

from core.contracts import FAILED_ATTEMPTS_LABEL, ROUTING_LABEL
from core.insights import Routing, Usage
from core.windows import Window
from warehouse import reporting
from warehouse.reporting import Query

GROUP_BY = (
    "project_id",
    "provider",
    "model",
    "model_tier",
    "region",
    "routing_tier",
    "workload_id",
    "source",
)


def _usage(r: dict[str, Any]) -> Usage:
    return Usage(
        project_id=r["project_id"],
        provider=r["provider"],
        model=r["model"],
        model_tier=r["model_tier"],
        region=r["region"],
        routing_tier=r["routing_tier"],
        workload_id=r["workload_id"],
        source=r["source"],
        events=int(r["events"]),
        requests=int(r["request_count"]),
        uncached=int(r["input_tokens_uncached"]),
        cached=int(r["input_tokens_cached"]),
        cache_creation=int(r["input_tokens_cache_creation"]),
        output=int(r["output_tokens"]),
        co2_g=float(r["co2_kg"]) * 1000.0,
        cost_usd=float(r["cost_usd"]) if int(r["events_cost"]) else None,
        estimated_events=int(r["events_estimated"]),
        energy_j=float(r["energy_j"]),
    )


def usage(client: Client, org_id: str, window: Window) -> list[Usage]:
    """The window's usage groups with live events (ordered by the keys)."""
    return [_usage(r) for r in reporting.sums(client, Query(org_id, window, None, GROUP_BY))]


def usage_by_day(client: Client, org_id: str, window: Window) -> dict[date, list[Usage]]:
    """The window's usage groups per UTC day (days without usage are absent)."""
    out: dict[date, list[Usage]] = {}
    for r in reporting.sums(client, Query(org_id, window, "day", GROUP_BY)):
        out.setdefault(r["bucket"].date(), []).append(_usage(r))
    return out


def reasons(client: Client, org_id: str, window: Window) -> list[dict[str, Any]]:
    """[{reason, event_count}] of the window's live events, most frequent first."""
    return reporting.estimation_reasons(client, Query(org_id, window)).get((), [])


def routing(client: Client, org_id: str, window: Window) -> Routing:
    """The window's requests that carry the gateway's routing labels: how many, how many asked for model
    "auto", and the upstream attempts that failed before one served them (the signed ledger: labels are not in
    the rollups). Events without the labels (providers' buckets, gateway events booked before them) are not
    counted."""
    where, params = reporting.ledger_where(Query(org_id, window))
    row = client.query(
        "SELECT sum(e.sign * e.request_count), "
        f"sumIf(e.sign * e.request_count, e.labels['{ROUTING_LABEL}'] = 'auto'), "
        f"sum(e.sign * toInt64OrZero(e.labels['{FAILED_ATTEMPTS_LABEL}'])) "
        f"FROM usage_events AS e WHERE {where} AND mapContains(e.labels, '{ROUTING_LABEL}')",
        parameters=params,
    ).result_rows[0]
    return Routing(requests=int(row[0] or 0), auto=int(row[1] or 0), failed_attempts=int(row[2] or 0))


def read(client: Client, org_id: str, window: Window) -> tuple[list[Usage], list[dict[str, Any]]]:
    """Both reads, for one call on the warehouse thread."""
    return usage(client, org_id, window), reasons(client, org_id, window)
