"""`joulestream reenrich --factors v2.0 --since DATE [--org ORG]`: recompute the ledger rows of open billing
periods from their stored raw tokens with another factor version.

The path (docs/reenrich.md says why this one):

1. Where the warehouse is: `open_or_ask` — a client opened here, or, when `joulestream up` holds the embedded
   warehouse, that runtime, asked over loopback (api/internal_reenrich.py serves the same functions).
2. Which (org, month)s have live rows since DATE (warehouse/reenrich.py). If any of them is sealed — its
   billing period is closing, closed or failed, or a later month of the org is (its late events were carried
   into that close) — nothing is touched: the command names them and exits with status 2. A closed, signed
   month never changes; its receipt keeps the factor version it was closed with.
3. For each month, page by page: every live row becomes its raw `UsageEvent` (tokens, identity, labels) with
   `revision + 1`, is enriched by core with the chosen factor set and the org's price overrides
   (controlplane.prices, as the stream worker does), and is written through the ledger writer, which cancels
   the old revision in the same insert. Totals therefore move from the old figures to the new ones exactly
   once. A row whose recomputed figures equal its stored ones is left alone, so a repeated run writes nothing.

Not done here: events still on their way through Kafka are enriched by the worker with its current version
(publish the new version first: `joulestream factors publish`). Like every ledger writer, this one assumes it
is the only writer of an event while it runs (a provider correction of the same bucket arriving at that very
moment is the one race; the later write of that event heals it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

import httpx
import pyarrow as pa

from controlplane.billing import BillingPeriods, parse_month
from core.contracts import EnrichedUsage, UsageEvent
from core.methodology import FactorSet, enrich
from warehouse.ledger import WriteResult, write_enriched
from warehouse.reenrich import live_months, live_page
from warehouse.runtime import RuntimeInfo, ask

SEALED = ("closing", "closed", "failed")
_EVENT_FIELDS = tuple(UsageEvent.model_fields)
_DERIVED = tuple(
    f for f in EnrichedUsage.model_fields if f not in UsageEvent.model_fields and f != "enriched_at"
)
PriceLookup = Callable[[str, str, str], Any]


class Refused(Exception):
    """Re-enrichment would touch sealed billing periods; `str(exc)` says which and what to do."""


class Ledger(Protocol):
    def months(self, since: date, org_id: str | None) -> list[dict[str, Any]]: ...
    def page(self, org_id: str, start: date, end: date, since: date, after: str, limit: int) -> pa.Table: ...
    def write(self, events: Sequence[EnrichedUsage]) -> WriteResult: ...


class DirectLedger:
    """The warehouse opened in this process."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def months(self, since: date, org_id: str | None) -> list[dict[str, Any]]:
        return live_months(self.client, since, org_id)

    def page(self, org_id: str, start: date, end: date, since: date, after: str, limit: int) -> pa.Table:
        return live_page(self.client, org_id, start, end, since, after, limit)

    def write(self, events: Sequence[EnrichedUsage]) -> WriteResult:
        return write_enriched(self.client, events)


class RuntimeLedger:
    """The warehouse held by a running `joulestream up`, asked over loopback (api/internal_reenrich.py)."""

    def __init__(self, info: RuntimeInfo) -> None:
        self.info = info

    def months(self, since: date, org_id: str | None) -> list[dict[str, Any]]:
        return ask(self.info, "/internal/v1/reenrich/months", since=since.isoformat(), org_id=org_id).json()[
            "months"
        ]

    def page(self, org_id: str, start: date, end: date, since: date, after: str, limit: int) -> pa.Table:
        r = ask(
            self.info,
            "/internal/v1/reenrich/page",
            timeout=300,
            org_id=org_id,
            start=start.isoformat(),
            end=end.isoformat(),
            since=since.isoformat(),
            after=after,
            limit=limit,
        )
        return pa.ipc.open_stream(r.content).read_all()

    def write(self, events: Sequence[EnrichedUsage]) -> WriteResult:
        body = b"[" + b",".join(e.model_dump_json().encode() for e in events) + b"]"
        r = httpx.post(
            f"{self.info.url.rstrip('/')}/internal/v1/reenrich/write",
            content=body,
            headers={**self.info.headers(), "Content-Type": "application/json"},
            timeout=300,
        )
        r.raise_for_status()
        return WriteResult(**r.json())


@dataclass
class Outcome:
    events: int = 0  # live events read
    rewritten: int = 0  # written as a new revision with the new figures
    unchanged: int = 0  # already equal to what the factor version gives: left alone
    cancelled: int = 0  # old revisions cancelled by the writer
    months: list[tuple[str, str, int]] = field(default_factory=list)  # (org_id, month, events)


def sealed(engine: Any, months: Iterable[dict[str, Any]]) -> list[str]:
    """Why each sealed (org, month) of `months` may not be touched (empty when none is)."""
    latest: dict[str, tuple[str, str]] = {}  # org → (latest sealed month, its status)
    for p in BillingPeriods(engine).list(statuses=SEALED):
        if p.org_id not in latest or p.month > latest[p.org_id][0]:
            latest[p.org_id] = (p.month, p.status)
    problems = []
    for m in months:
        found = latest.get(m["org_id"])
        if found is None or m["month"] > found[0]:
            continue
        month, status = found
        why = (
            f"its billing period is {status}"
            if month == m["month"]
            else f"a later period ({month}) is {status}, and late events of earlier months belong to it"
        )
        problems.append(f"org {m['org_id']} {m['month']} ({m['events']} events): {why}")
    return problems


def _event(row: dict[str, Any]) -> UsageEvent:
    values = {f: row[f] for f in _EVENT_FIELDS if f in row}
    labels = values.get("labels")
    if isinstance(labels, list):  # an Arrow map comes back as (key, value) pairs
        values["labels"] = dict(labels)
    values["revision"] = int(row["revision"]) + 1
    return UsageEvent.model_validate(values)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b


def recompute(
    rows: list[dict[str, Any]], fs: FactorSet, prices: PriceLookup | None, now: datetime
) -> tuple[list[EnrichedUsage], int]:
    """(the rows whose figures change, as revision + 1 enriched with `fs`; how many stay as they are)."""
    out: list[EnrichedUsage] = []
    unchanged = 0
    for row in rows:
        ev = _event(row)
        price = prices(ev.org_id, ev.provider, ev.model) if prices is not None else None
        new = enrich(ev, fs, now, prices=price)
        if all(_same(getattr(new, f), row[f]) for f in _DERIVED if f in row):
            unchanged += 1
        else:
            out.append(new)
    return out, unchanged


def reenrich(
    ledger: Ledger,
    engine: Any,
    fs: FactorSet,
    since: date,
    org_id: str | None = None,
    prices: PriceLookup | None = None,
    batch: int = 5_000,
    on_start: Callable[[int], None] = lambda total: None,
    on_progress: Callable[[int], None] = lambda n: None,
) -> Outcome:
    """Re-enrich the live rows with `bucket_start >= since` (of one org, or all) with `fs`; raises Refused
    (touching nothing) when any of their months is sealed. `on_start(total events)` and `on_progress(n events
    done)` drive a progress bar."""
    months = ledger.months(since, org_id)
    problems = sealed(engine, months)
    if problems:
        raise Refused(
            "refusing to re-enrich closed billing periods — a closed, signed month never changes and keeps "
            "the factor version it was closed with:\n  "
            + "\n  ".join(problems)
            + "\nRe-run with a later --since (after the last closed month), or --org for an org without them."
        )
    out = Outcome(months=[(m["org_id"], m["month"], m["events"]) for m in months])
    on_start(sum(m["events"] for m in months))
    now = datetime.now(UTC)
    for m in months:
        _, start, last = parse_month(m["month"])
        end = date(last.year + (last.month == 12), last.month % 12 + 1, 1)
        after = ""
        while True:
            table = ledger.page(m["org_id"], start, end, since, after, batch)
            if table.num_rows == 0:
                break
            rows = table.to_pylist()
            after = rows[-1]["event_id"]
            changed, unchanged = recompute(rows, fs, prices, now)
            if changed:
                result = ledger.write(changed)
                out.rewritten += result.inserted
                out.cancelled += result.cancelled
            out.unchanged += unchanged
            out.events += len(rows)
            on_progress(len(rows))
    return out
