"""Telemetry: /api/v1/telemetry/summary, /events, /models. Scope `read`; everything is the caller's org.

Sums come from the warehouse rollups, event lists from the signed ledger (live revisions only). A
`project_id` filter must name a project of the caller's org (deleted ones included: their history stays) —
anything else is 404, never another org's data. Without a warehouse (NullTelemetry) the figures are zeros
and the lists empty. Warehouse failures answer 503.
"""

from __future__ import annotations

import inspect
import logging
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import AppContext, Ctx, Dates, Page, ReadPrincipal
from api.errors import error_responses, validation_error
from api.telemetry import build_summary
from controlplane import NotFound
from warehouse.telemetry import Scope

router = APIRouter(prefix="/telemetry", tags=["telemetry"], responses=error_responses(401, 403))
log = logging.getLogger("joulestream.api.telemetry")

ProjectFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=64, description="Only this project (an id of the caller's org)"),
]
ModelFilter = Annotated[str | None, Query(min_length=1, max_length=200, description="Only this model")]
OptStart = Annotated[date | None, Query(description="ISO date, inclusive (default: unbounded)")]
OptEnd = Annotated[date | None, Query(description="ISO date, inclusive (default: unbounded)")]


# --------------------------------------------------------------------------------------------- models


class CacheSplit(BaseModel):
    uncached_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    cached_co2_savings_kg: float = Field(
        description="CO2e the cached input tokens saved compared with paying the prefill price"
    )


class Coverage(BaseModel):
    """Live events that carry each v2 figure (events enriched before methodology v2 carry none): a sum covers
    only these events, and is null when none does."""

    co2_market: int
    co2_embodied: int
    water: int
    cost: int


class EnergyPart(BaseModel):
    """The measured (energy_source = measured) or estimated part of the energy and location-based CO2e."""

    event_count: int
    energy_kwh: float
    co2_kg: float
    co2_kg_low: float
    co2_kg_high: float


class EstimationReason(BaseModel):
    reason: str
    event_count: int = Field(description="live events giving this reason")


class Estimation(BaseModel):
    """How the figures were estimated: whether any event fell back to a default, how many, and why."""

    is_estimated: bool = Field(description="true when any event of the row fell back to a default factor")
    estimated_event_count: int
    estimated_share: float = Field(description="estimated events / events (0 … 1)")
    estimation_reasons: list[EstimationReason] = Field(description="distinct reasons, most frequent first")


class V2Totals(BaseModel):
    """Methodology v2 totals: Scope 2 market-based and Scope 3 embodied CO2e, water (each with its bounds) and
    cost. null when no event in the row carries the figure (see `coverage`)."""

    total_co2_market_kg: float | None = Field(description="Scope 2 market-based CO2e")
    total_co2_market_lower_bound_kg: float | None
    total_co2_market_upper_bound_kg: float | None
    total_co2_embodied_kg: float | None = Field(description="Scope 3 embodied (hardware manufacturing) CO2e")
    total_co2_embodied_lower_bound_kg: float | None
    total_co2_embodied_upper_bound_kg: float | None
    total_water_l: float | None = Field(description="water consumed on and off site, litres")
    total_water_lower_bound_l: float | None
    total_water_upper_bound_l: float | None
    total_cost_usd: float | None
    coverage: Coverage
    measured: EnergyPart = Field(description="the part from measured energy")
    estimated: EnergyPart = Field(
        description="the part estimated from tokens (the total minus the measured part)"
    )


class ModelShare(Estimation):
    model: str
    provider: str
    total_tokens: int
    co2_kg: float
    event_count: int
    percentage: float = Field(description="share of the period's total CO2e, in %")
    co2_market_kg: float | None = None
    co2_embodied_kg: float | None = None
    water_l: float | None = None
    cost_usd: float | None = None


class DailyPoint(BaseModel):
    date: date
    co2_kg: float
    tokens: int


class Period(BaseModel):
    start: date
    end: date


class TelemetrySummary(V2Totals, Estimation):
    total_co2_kg: float = Field(description="Scope 2 location-based CO2e")
    total_co2_lower_bound_kg: float
    total_co2_upper_bound_kg: float
    total_tokens: int = Field(description="input (uncached + cached + cache creation) + output tokens")
    input_tokens: int
    output_tokens: int
    total_energy_kwh: float
    event_count: int
    cached_vs_uncached: CacheSplit
    per_model: list[ModelShare] = Field(description="largest CO2e first")
    daily_chart: list[DailyPoint] = Field(
        description="every day of the period (zeros included) for periods up to 400 days, else the days "
        "with usage"
    )
    factors_version: str | None = Field(
        description="the newest carbon factor version behind the figures (the current one when empty)"
    )
    factors_versions: list[str] = Field(description="every factor version behind the figures, oldest first")
    period: Period


class Pagination(BaseModel):
    page: int
    page_size: int
    total_items: int
    total_pages: int


class TelemetryEvent(BaseModel):
    id: str = Field(description="event id")
    revision: int
    source: str
    model: str
    provider: str
    model_tier: str
    region: str | None
    routing_tier: str | None
    project_id: str
    project_name: str | None = Field(description="null when the control plane does not know the project")
    workload_id: str
    bucket_start: datetime
    bucket_end: datetime
    event_timestamp: datetime
    input_tokens_uncached: int
    input_tokens_cached: int
    input_tokens_cache_creation: int
    output_tokens: int
    request_count: int
    energy_j: float
    co2_kg: float
    co2_kg_low: float
    co2_kg_high: float
    co2_kg_market: float | None = Field(description="market-based CO2e; null when enriched before v2")
    co2_kg_market_low: float | None
    co2_kg_market_high: float | None
    co2_kg_embodied: float | None
    co2_kg_embodied_low: float | None
    co2_kg_embodied_high: float | None
    water_l: float | None
    water_l_low: float | None
    water_l_high: float | None
    cost_usd: float | None
    energy_source: str = Field(description="estimated (from tokens) or measured")
    measured_energy_j: float | None
    measured_by: str | None
    measured_boundary: str | None
    measured_uncertainty_pct: float | None
    price_source: str | None
    factors_version: str
    is_estimated: bool
    estimation_reasons: list[str]


class EventList(BaseModel):
    events: list[TelemetryEvent] = Field(description="live events, newest first (bucket_start, id)")
    pagination: Pagination


class ModelUsage(V2Totals, Estimation):
    model: str
    provider: str
    total_tokens: int
    input_tokens_uncached: int
    input_tokens_cached: int
    input_tokens_cache_creation: int
    output_tokens: int
    total_co2_kg: float
    total_co2_lower_bound_kg: float
    total_co2_upper_bound_kg: float
    energy_j: float
    event_count: int
    first_seen: datetime = Field(description="start of the first hour with usage")
    last_seen: datetime = Field(description="start of the last hour with usage")


class ModelList(BaseModel):
    models: list[ModelUsage] = Field(description="largest CO2e first")


# --------------------------------------------------------------------------------------------- helpers


async def warehouse_call(fn, *args) -> Any:
    """Call the telemetry provider (`async def`, or plain in a worker thread); its failures answer 503
    (logged), never 500."""
    try:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        result = await run_in_threadpool(fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result
    except HTTPException:
        raise
    except Exception as exc:
        log.error("telemetry store failed: %s", exc, exc_info=True)
        raise HTTPException(503, "telemetry store unavailable, retry later") from exc


async def project_names(ctx: AppContext, org_id: str, project_id: str | None) -> dict[str, str]:
    """The org's project id → name map (deleted projects included); 404 when `project_id` is not one."""
    names = await run_in_threadpool(ctx.projects.names, org_id)
    if project_id is not None and project_id not in names:
        raise NotFound("project not found")
    return names


async def check_project(ctx: AppContext, org_id: str, project_id: str | None) -> None:
    """404 unless `project_id` (when given) is a project of the caller's org, deleted ones included."""
    if project_id is not None:
        await project_names(ctx, org_id, project_id)


def check_order(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and start > end:
        raise validation_error(("query", "start_date"), "start_date must not be after end_date", str(start))


# --------------------------------------------------------------------------------------------- routes


@router.get(
    "/summary",
    response_model=TelemetrySummary,
    responses=error_responses(404, 503),
    summary="Dashboard summary: CO2e with bounds, tokens, cache split, per model, per day",
)
async def get_summary(
    ctx: Ctx, principal: ReadPrincipal, dates: Dates, project_id: ProjectFilter = None
) -> TelemetrySummary:
    await check_project(ctx, principal.org_id, project_id)
    result = await warehouse_call(ctx.telemetry.summary, principal.org_id, project_id, dates.start, dates.end)
    # the provider's keys over a zero summary (NullTelemetry answers a few keys, an empty chart)
    body = build_summary([], dates.start, dates.end)
    body.update({k: v for k, v in dict(result or {}).items() if v or k != "daily_chart"})
    if body.get("factors_version") is None:
        current = await run_in_threadpool(ctx.factor_versions.current)
        body["factors_version"] = current.version if current else None
    return TelemetrySummary.model_validate(body)


@router.get(
    "/events",
    response_model=EventList,
    responses=error_responses(404, 503),
    summary="Live usage events, newest first, paginated",
)
async def list_events(
    ctx: Ctx,
    principal: ReadPrincipal,
    page: Page,
    start_date: OptStart = None,
    end_date: OptEnd = None,
    model: ModelFilter = None,
    project_id: ProjectFilter = None,
) -> EventList:
    check_order(start_date, end_date)
    names = await project_names(ctx, principal.org_id, project_id)
    scope = Scope(principal.org_id, start_date, end_date, project_id=project_id, model=model)
    rows, total = await warehouse_call(ctx.telemetry.events, scope, page.offset, page.page_size)
    events = []
    for row in rows:
        row = dict(row)
        row["id"] = row.pop("event_id")
        row["project_name"] = names.get(row["project_id"])
        events.append(TelemetryEvent.model_validate(row))
    return EventList(events=events, pagination=Pagination(**page.info(total)))


@router.get(
    "/models",
    response_model=ModelList,
    responses=error_responses(404, 503),
    summary="Models used by the org, with their usage, CO2e and first/last use",
)
async def list_models(
    ctx: Ctx,
    principal: ReadPrincipal,
    start_date: OptStart = None,
    end_date: OptEnd = None,
    project_id: ProjectFilter = None,
) -> ModelList:
    check_order(start_date, end_date)
    await check_project(ctx, principal.org_id, project_id)
    rows = await warehouse_call(
        ctx.telemetry.models, Scope(principal.org_id, start_date, end_date, project_id)
    )
    return ModelList(models=[ModelUsage.model_validate(m) for m in rows])
