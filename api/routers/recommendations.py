"""Recommendations (insights): /api/v1/recommendations. See with scope `read`, change with scope `admin`.

`GET /recommendations` runs the engine (`core.insights` over `warehouse.insights`) on the window (`last`,
`start`/`end`: `core.windows`; default `settings.insights_window`, 30d) and records the run
(`controlplane.recommendations`): the answer is the run's recommendations with their ids and state.
`GET /active` lists the stored active ones (`refresh=true` runs first), `/top` the largest active ones by
annual CO2e (`metric=co2`) or cost, `/ignored`, `/applied`, `/history` (state changes, `start`/`end`
filters), `/savings` (claimed, reported and measured savings of the applied ones, by type).
`PATCH /{id}/apply` (optional realized savings; a negative figure needs a `reason`, else 422),
`PATCH /{id}/ignore`, `DELETE /{id}/ignore` (restore). Unknown id, or another org's: 404; a state that does
not allow the change: 409 with `detail`. docs/insights.md has the rules and formulas.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import AdminPrincipal, AppContext, Ctx, Principal, ReadPrincipal
from api.errors import error_responses, validation_error
from api.routers.telemetry import warehouse_call
from api.savings import factor_set, price_of, record_due
from controlplane.recommendations import Change, Recommendation, Recommendations, SavingsLedger
from core import insights
from core.insights import Usage, measured
from core.windows import Window, WindowError, floor, window
from warehouse import insights as wh_insights

router = APIRouter(
    prefix="/recommendations", tags=["recommendations"], responses=error_responses(401, 403, 422, 503)
)
RecId = Annotated[str, Path(min_length=1, max_length=64, description="Recommendation id (uuid)")]


def now() -> datetime:
    return datetime.now(UTC)


class RecommendationOut(BaseModel):
    id: str
    type: str
    status: Literal["active", "applied", "ignored", "stale"]
    priority: Literal["high", "medium", "low"]
    scope: str
    subject: str
    project_id: str | None
    model: str | None
    description: str
    potential_savings_co2e_grams: float = Field(description="per year, location-based")
    potential_savings_cost: float | None = Field(description="USD per year; null without prices")
    evidence: dict[str, Any]
    first_seen_at: datetime
    last_seen_at: datetime
    status_changed_at: datetime
    status_changed_by: str
    realized_savings_co2e_grams: float | None
    realized_savings_cost: float | None
    realized_reason: str | None

    @classmethod
    def of(cls, r: Recommendation) -> RecommendationOut:
        return cls.model_validate(r, from_attributes=True)


class RecommendationList(BaseModel):
    recommendations: list[RecommendationOut]
    window: dict[str, Any] | None = None


class ApplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    realized_savings_co2e_grams: float | None = Field(default=None, allow_inf_nan=False, ge=-1e15, le=1e15)
    realized_savings_cost: float | None = Field(default=None, allow_inf_nan=False, ge=-1e12, le=1e12)
    reason: str | None = Field(default=None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _negative_needs_reason(self) -> ApplyIn:
        negative = any(
            v is not None and v < 0 for v in (self.realized_savings_co2e_grams, self.realized_savings_cost)
        )
        if negative and not self.reason:
            raise ValueError("a negative realized saving needs a reason")
        return self


def _actor(p: Principal) -> str:
    return f"api_key:{p.key_id}" if p.key_id else f"jwt:{p.subject}"


def _window_or_422(ctx: AppContext, last: str | None, start: str | None, end: str | None) -> Window:
    try:
        return window(now=now(), last=last, start=start, end=end, default_last=ctx.settings.insights_window)
    except WindowError as exc:
        raise validation_error(
            ("query", exc.field), exc.message, {"last": last, "start": start, "end": end}.get(exc.field)
        ) from None


async def _run(ctx: AppContext, org_id: str, w: Window) -> list[Recommendation]:
    """Read the window, run the rules, record the run."""
    read = getattr(ctx.telemetry, "read", None)
    usage, reasons = ([], []) if read is None else await warehouse_call(read, wh_insights.read, org_id, w)
    fs = await run_in_threadpool(factor_set, ctx)
    prices = await run_in_threadpool(price_of, ctx, org_id, fs)
    days = (w.end - w.start).total_seconds() / 86400.0
    win = {"start": w.start.isoformat(), "end": w.end.isoformat(), "label": w.label, "days": days}
    findings = insights.run(fs, usage, win, days, prices, reasons)
    return await run_in_threadpool(Recommendations(ctx.engine).sync, org_id, findings, now())


def _out(rows: list[Recommendation], w: Window | None = None) -> RecommendationList:
    win = None if w is None else {"start": w.start, "end": w.end, "label": w.label}
    return RecommendationList(recommendations=[RecommendationOut.of(r) for r in rows], window=win)


Last = Annotated[
    str | None, Query(max_length=16, description="24h, 7d, 30d (default), 1y, ytd or <n>h|d|w|y")
]
Start = Annotated[str | None, Query(max_length=40, description="ISO 8601 date or whole-hour date-time")]
End = Annotated[str | None, Query(max_length=40, description="ISO 8601; a date includes that day")]


@router.get("", summary="Run the engine on the window and return its recommendations")
async def run_recommendations(
    ctx: Ctx, principal: ReadPrincipal, last: Last = None, start: Start = None, end: End = None
) -> RecommendationList:
    w = _window_or_422(ctx, last, start, end)
    return _out(await _run(ctx, principal.org_id, w), w)


@router.get("/active", summary="The active recommendations (refresh=true: run the engine first)")
async def active(
    ctx: Ctx,
    principal: ReadPrincipal,
    refresh: bool = False,
    last: Last = None,
    start: Start = None,
    end: End = None,
) -> RecommendationList:
    w = _window_or_422(ctx, last, start, end)
    if refresh:
        await _run(ctx, principal.org_id, w)
    rows = await run_in_threadpool(Recommendations(ctx.engine).list, principal.org_id, "active")
    return _out(rows, w if refresh else None)


@router.get("/top", summary="The largest active recommendations by annual CO2e or cost saving")
async def top(
    ctx: Ctx,
    principal: ReadPrincipal,
    limit: Annotated[int, Query(ge=1, le=100)] = 5,
    metric: Literal["co2", "cost"] = "co2",
) -> RecommendationList:
    rows = await run_in_threadpool(Recommendations(ctx.engine).list, principal.org_id, "active")
    if metric == "cost":
        rows = sorted(rows, key=lambda r: (-(r.potential_savings_cost or 0.0), r.identity))
    return _out(rows[:limit])


@router.get("/ignored", summary="The ignored recommendations")
async def ignored(ctx: Ctx, principal: ReadPrincipal) -> RecommendationList:
    return _out(await run_in_threadpool(Recommendations(ctx.engine).list, principal.org_id, "ignored"))


@router.get("/applied", summary="The applied recommendations")
async def applied(ctx: Ctx, principal: ReadPrincipal) -> RecommendationList:
    return _out(await run_in_threadpool(Recommendations(ctx.engine).list, principal.org_id, "applied"))


def _bound(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise validation_error(("query", name), "not an ISO 8601 date or date-time", value) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@router.get("/history", summary="State changes (who, when, from → to), oldest first")
async def changes(ctx: Ctx, principal: ReadPrincipal, start: Start = None, end: End = None) -> dict[str, Any]:
    lo, hi = _bound("start", start), _bound("end", end)
    if lo is not None and hi is not None and lo > hi:
        raise validation_error(("query", "start"), "start must not be after end", start)
    rows: list[Change] = await run_in_threadpool(
        Recommendations(ctx.engine).history, principal.org_id, lo, hi
    )
    return {"history": [c.__dict__ for c in rows]}


def _since(r: Recommendation, at: datetime) -> Window:
    """From the hour the recommendation was applied in to the end of the current hour."""
    return Window(floor(r.status_changed_at, "hour"), floor(at, "hour") + timedelta(hours=1), "since applied")


def _measure(client: Any, org_id: str, rows: list[Recommendation], at: datetime) -> dict[str, list[Usage]]:
    return {
        r.id: wh_insights.usage(client, org_id, _since(r, at)) for r in rows if r.type in measured.MEASURABLE
    }


_SUMS = ("applied", "claimed_co2e_grams_per_year", "claimed_cost_per_year", "reported_co2e_grams",
         "reported_cost", "measured_co2e_grams", "measured_cost", "ledger_co2e_grams", "ledger_cost")  # fmt: skip


@router.get(
    "/savings", summary="Claimed, reported and measured savings of the applied recommendations, by type"
)
async def savings(ctx: Ctx, principal: ReadPrincipal) -> dict[str, Any]:
    rows = await run_in_threadpool(Recommendations(ctx.engine).list, principal.org_id, "applied")
    at = now()
    read = getattr(ctx.telemetry, "read", None)
    usage: dict[str, list[Usage]] = {}
    if read is not None and rows:
        usage = await warehouse_call(read, _measure, principal.org_id, rows, at)
    fs = await run_in_threadpool(factor_set, ctx)
    prices = await run_in_threadpool(price_of, ctx, principal.org_id, fs)
    book = await run_in_threadpool(SavingsLedger(ctx.engine).sums, principal.org_id)
    items: list[dict[str, Any]] = []
    by: dict[str, dict[str, Any]] = {}
    for r in rows:
        m = None
        if r.id in usage:
            m = measured.measured_savings(fs, r.type, r.project_id, r.model, r.evidence, usage[r.id], prices)
        items.append(
            {
                "id": r.id,
                "type": r.type,
                "applied_at": r.status_changed_at,
                "claimed_co2e_grams_per_year": r.potential_savings_co2e_grams,
                "claimed_cost_per_year": r.potential_savings_cost,
                "reported_co2e_grams": r.realized_savings_co2e_grams,
                "reported_cost": r.realized_savings_cost,
                "measured": None if m is None else {**m._asdict(), "since": _since(r, at).start, "until": at},
                "ledger": None if (b := book.get(r.id)) is None else b.__dict__,
            }
        )
        s = by.setdefault(r.type, {"type": r.type, **{k: 0 if k == "applied" else 0.0 for k in _SUMS}})
        s["applied"] += 1
        s["claimed_co2e_grams_per_year"] += r.potential_savings_co2e_grams
        s["claimed_cost_per_year"] += r.potential_savings_cost or 0.0
        s["reported_co2e_grams"] += r.realized_savings_co2e_grams or 0.0
        s["reported_cost"] += r.realized_savings_cost or 0.0
        s["measured_co2e_grams"] += 0.0 if m is None else m.co2e_grams
        s["measured_cost"] += 0.0 if m is None or m.cost is None else m.cost
        s["ledger_co2e_grams"] += 0.0 if b is None else b.co2e_grams
        s["ledger_cost"] += 0.0 if b is None or b.cost is None else b.cost
    types = [by[t] for t in sorted(by)]
    return {"by_type": types, "total": {k: sum(t[k] for t in types) for k in _SUMS}, "recommendations": items}


@router.post(
    "/savings/record",
    status_code=200,
    summary="Record the measured savings of the days due now (the schedule does it after each KPI refresh)",
)
async def record_savings(ctx: Ctx, principal: AdminPrincipal) -> dict[str, Any]:
    return {"recorded_days": len(await record_due(ctx, org_id=principal.org_id))}


_CHANGE = error_responses(404, 409)


@router.patch("/{rec_id}/apply", summary="Mark applied (optional realized savings)", responses=_CHANGE)
async def apply(
    ctx: Ctx, principal: AdminPrincipal, rec_id: RecId, body: ApplyIn | None = None
) -> RecommendationOut:
    b = body or ApplyIn()
    r = await run_in_threadpool(
        Recommendations(ctx.engine).apply, principal.org_id, rec_id, _actor(principal), now(),
        b.realized_savings_co2e_grams, b.realized_savings_cost, b.reason,
    )  # fmt: skip
    return RecommendationOut.of(r)


@router.patch("/{rec_id}/ignore", summary="Ignore", responses=_CHANGE)
async def ignore(ctx: Ctx, principal: AdminPrincipal, rec_id: RecId) -> RecommendationOut:
    r = await run_in_threadpool(
        Recommendations(ctx.engine).ignore, principal.org_id, rec_id, _actor(principal), now()
    )
    return RecommendationOut.of(r)


@router.delete("/{rec_id}/ignore", summary="Restore an ignored recommendation", responses=_CHANGE)
async def restore(ctx: Ctx, principal: AdminPrincipal, rec_id: RecId) -> RecommendationOut:
    r = await run_in_threadpool(
        Recommendations(ctx.engine).restore, principal.org_id, rec_id, _actor(principal), now()
    )
    return RecommendationOut.of(r)
