"""The measured savings ledger's recorder: for every applied recommendation, each complete UTC day since it
was applied is measured once (`core.insights.measured`: the affected traffic's counterfactual under the old
model, region or caching, minus what it emitted) and written to `recommendation_savings`
(`controlplane.recommendations.SavingsLedger`); each day written raises the Prometheus counter
`joulestream_co2e_savings_attributed_grams_total` (or `…_reversed_grams_total` for a day that made things
worse), by type.

When it runs: after each KPI refresh (`api.kpis.KpiRefresher`, every JOULESTREAM_KPI_REFRESH_S in every API
process), and on `POST /api/v1/recommendations/savings/record` (admin). A day is due once it ended `SETTLE` ago
(late gateway events and hourly provider buckets have arrived by then); its first day runs from the hour of
the apply. Several API processes may record at once: a day is written once (its primary key), and only the
process that wrote it raises the counter. Types the warehouse cannot measure (BATCH_ELIGIBLE, DATA_QUALITY)
get no rows.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from api.deps import AppContext
from controlplane.prices import PriceLookup, as_prices
from controlplane.recommendations import Recommendation, SavingsDay, SavingsLedger
from core.insights import PriceOf, measured
from core.methodology import FactorSet, Prices, load_factor_set, price_for
from core.metrics import metrics
from core.windows import Window, floor
from warehouse import insights as wh_insights

log = logging.getLogger("joulestream.api.savings")

SETTLE = timedelta(hours=2)
MAX_DAYS_PER_RECOMMENDATION = 400  # per run: a long-applied recommendation catches up over a few runs


def factor_set(ctx: AppContext) -> FactorSet:
    """The current factor set (the control plane's, else the packaged default)."""
    current = ctx.factor_versions.current()
    return current.factor_set if current is not None else load_factor_set()


def price_of(ctx: AppContext, org_id: str, fs: FactorSet) -> PriceOf:
    """The org's prices: its overrides, else the factor set's price book."""
    lookup = PriceLookup(ctx.engine)

    def find(provider: str, model: str) -> Prices | None:
        o = lookup.find(org_id, provider, model)
        return as_prices(o) if o is not None else price_for(fs, provider, model)

    return find


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


def due_days(r: Recommendation, last_recorded: date | None, now: datetime) -> Window | None:
    """The window of `r`'s days due for recording: from the day after the last one on record (or the applied
    hour) to the end of the last complete, settled day; None when no day is due."""
    applied = floor(r.status_changed_at, "hour")
    first = last_recorded + timedelta(days=1) if last_recorded is not None else applied.date()
    last = (now - SETTLE).date() - timedelta(days=1)
    last = min(last, first + timedelta(days=MAX_DAYS_PER_RECOMMENDATION - 1))
    if last < first:
        return None
    start = max(applied, _midnight(first))
    return Window(start, _midnight(last + timedelta(days=1)), "savings ledger")


def measure_days(
    r: Recommendation, w: Window, by_day: dict[date, list[Any]], fs: FactorSet, prices: PriceOf, now: datetime
) -> list[SavingsDay]:
    """One ledger row per day of `w` (a day without affected traffic measures 0)."""
    out = []
    d = w.start.date()
    while _midnight(d) < w.end:
        m = measured.measured_savings(
            fs, r.type, r.project_id, r.model, r.evidence, by_day.get(d, []), prices
        )
        if m is None:
            return []
        out.append(
            SavingsDay(r.id, d, r.org_id, r.type, m.co2e_grams, m.cost, m.events, m.requests, fs.version, now)
        )
        d += timedelta(days=1)
    return out


async def record_due(
    ctx: AppContext, now: datetime | None = None, org_id: str | None = None
) -> list[SavingsDay]:
    """Measure and write the due days of every applied recommendation (of one org); returns those written."""
    now = now or datetime.now(UTC)
    read = getattr(ctx.telemetry, "read", None)
    if read is None:
        return []
    book = SavingsLedger(ctx.engine)
    applied = await asyncio.to_thread(book.applied)
    last = await asyncio.to_thread(book.last_days)
    fs = await asyncio.to_thread(factor_set, ctx)
    rows: list[SavingsDay] = []
    for r in applied:
        if r.type not in measured.MEASURABLE or org_id not in (None, r.org_id):
            continue
        w = due_days(r, last.get(r.id), now)
        if w is None:
            continue
        by_day = await read(wh_insights.usage_by_day, r.org_id, w)
        prices = await asyncio.to_thread(price_of, ctx, r.org_id, fs)
        rows.extend(measure_days(r, w, by_day, fs, prices, now))
    written = await asyncio.to_thread(book.record, rows)
    m = metrics()
    for d in written:
        if d.co2e_grams >= 0:
            m.savings_attributed_g.labels(d.type).inc(d.co2e_grams)
        else:
            m.savings_reversed_g.labels(d.type).inc(-d.co2e_grams)
    if written:
        log.info("savings ledger: %d day(s) recorded", len(written))
    return written
