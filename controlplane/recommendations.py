"""Recommendations' state (tables `recommendations`, `recommendation_history`, migration 0060): what the insights
engine (`core.insights`) proposed for an org, its status and every change with who made it and when.

A run is `sync`ed in: a finding whose identity (type|scope|subject) is known updates that row (never a twin);
an `active` row the run no longer finds becomes `stale`, a `stale` one found again becomes `active`. `ignored`
and `applied` rows keep their status (an ignored one still gets the new figures; an applied one keeps the
figures it was applied with: they are what was claimed).

Transitions by people: apply (active or stale → applied), ignore (active or stale → ignored), restore
(ignored → active). Anything else is a Conflict (409); an unknown id, or another org's, is NotFound (404).
Tenancy: every method takes `org_id`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane.errors import Conflict, NotFound
from controlplane.schema import recommendation_history as history
from controlplane.schema import recommendation_savings as ledger
from controlplane.schema import recommendations as recs
from core.insights import Finding

ENGINE_ACTOR = "engine"
SYNC_ATTEMPTS = 3


@dataclass(frozen=True)
class Recommendation:
    id: str
    org_id: str
    identity: str
    type: str
    scope: str
    subject: str
    project_id: str | None
    model: str | None
    status: str
    priority: str
    description: str
    potential_savings_co2e_grams: float
    potential_savings_cost: float | None
    evidence: dict[str, Any]
    first_seen_at: datetime
    last_seen_at: datetime
    status_changed_at: datetime
    status_changed_by: str
    realized_savings_co2e_grams: float | None
    realized_savings_cost: float | None
    realized_reason: str | None


@dataclass(frozen=True)
class Change:
    recommendation_id: str
    type: str
    at: datetime
    actor: str
    from_status: str | None
    to_status: str
    note: str | None


def _rec(r: Any) -> Recommendation:
    d = dict(r._mapping)
    d["evidence"] = orjson.loads(d["evidence"])
    return Recommendation(**d)


def _figures(f: Finding) -> dict[str, Any]:
    return {
        "priority": f.priority,
        "description": f.description,
        "potential_savings_co2e_grams": f.potential_savings_co2e_grams,
        "potential_savings_cost": f.potential_savings_cost,
        "evidence": orjson.dumps(f.evidence).decode(),
        "project_id": f.project_id,
        "model": f.model,
    }


class Recommendations:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---------------------------------------------------------------------------------------- engine runs

    def sync(self, org_id: str, findings: Sequence[Finding], at: datetime) -> list[Recommendation]:
        """Record one run's findings (module docstring); returns their rows, in the findings' order. Two runs
        of one org at once: the one that loses the race on a new identity's unique key runs again (it then
        updates the row the other inserted)."""
        for attempt in range(SYNC_ATTEMPTS):
            try:
                return self._sync(org_id, findings, at)
            except IntegrityError:
                if attempt == SYNC_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _sync(self, org_id: str, findings: Sequence[Finding], at: datetime) -> list[Recommendation]:
        with self.engine.begin() as conn:
            known = {r.identity: r for r in conn.execute(select(recs).where(recs.c.org_id == org_id)).all()}
            found_ids: list[str] = []
            for f in findings:
                row = known.get(f.identity)
                if row is None:
                    rid = str(uuid.uuid4())
                    conn.execute(
                        insert(recs).values(
                            id=rid,
                            org_id=org_id,
                            identity=f.identity,
                            type=f.type,
                            scope=f.scope,
                            subject=f.subject,
                            status="active",
                            first_seen_at=at,
                            last_seen_at=at,
                            status_changed_at=at,
                            status_changed_by=ENGINE_ACTOR,
                            **_figures(f),
                        )
                    )
                    _log(conn, org_id, rid, at, ENGINE_ACTOR, None, "active", None)
                else:
                    rid = row.id
                    values: dict[str, Any] = {"last_seen_at": at}
                    if row.status != "applied":
                        values.update(_figures(f))
                    if row.status == "stale":
                        values.update(status="active", status_changed_at=at, status_changed_by=ENGINE_ACTOR)
                        _log(conn, org_id, rid, at, ENGINE_ACTOR, "stale", "active", "condition holds again")
                    conn.execute(update(recs).where(recs.c.id == rid).values(**values))
                found_ids.append(rid)
            seen = {f.identity for f in findings}
            for identity, row in known.items():
                if identity not in seen and row.status == "active":
                    conn.execute(
                        update(recs)
                        .where(recs.c.id == row.id)
                        .values(status="stale", status_changed_at=at, status_changed_by=ENGINE_ACTOR)
                    )
                    _log(
                        conn, org_id, row.id, at, ENGINE_ACTOR, "active", "stale", "condition no longer holds"
                    )
            by_id = {
                r.id: _rec(r)
                for r in conn.execute(select(recs).where(recs.c.org_id == org_id, recs.c.id.in_(found_ids)))
            }
        return [by_id[i] for i in found_ids]

    # ---------------------------------------------------------------------------------------- reads

    def get(self, org_id: str, rec_id: str) -> Recommendation:
        with self.engine.connect() as conn:
            r = conn.execute(select(recs).where(recs.c.org_id == org_id, recs.c.id == rec_id)).first()
        if r is None:
            raise NotFound("recommendation not found")
        return _rec(r)

    def list(self, org_id: str, status: str | None = None) -> list[Recommendation]:
        """The org's recommendations (of one status), largest annual CO2e saving first."""
        q = select(recs).where(recs.c.org_id == org_id)
        if status is not None:
            q = q.where(recs.c.status == status)
        q = q.order_by(recs.c.potential_savings_co2e_grams.desc(), recs.c.identity)
        with self.engine.connect() as conn:
            return [_rec(r) for r in conn.execute(q)]

    def history(
        self, org_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[Change]:
        """State changes at or after `start` and before `end`, oldest first."""
        q = (
            select(history, recs.c.type)
            .join(recs, recs.c.id == history.c.recommendation_id)
            .where(history.c.org_id == org_id)
        )
        if start is not None:
            q = q.where(history.c.at >= start)
        if end is not None:
            q = q.where(history.c.at < end)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(history.c.at, history.c.id)).all()
        return [
            Change(r.recommendation_id, r.type, r.at, r.actor, r.from_status, r.to_status, r.note)
            for r in rows
        ]

    # ---------------------------------------------------------------------------------------- changes

    def _move(
        self,
        org_id: str,
        rec_id: str,
        allowed: tuple[str, ...],
        to: str,
        actor: str,
        at: datetime,
        note: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Recommendation:
        with self.engine.begin() as conn:
            r = conn.execute(select(recs).where(recs.c.org_id == org_id, recs.c.id == rec_id)).first()
            if r is None:
                raise NotFound("recommendation not found")
            if r.status not in allowed:
                raise Conflict(
                    f"recommendation is {r.status}: only {' or '.join(allowed)} ones can become {to}"
                )
            conn.execute(
                update(recs)
                .where(recs.c.id == rec_id)
                .values(status=to, status_changed_at=at, status_changed_by=actor, **(extra or {}))
            )
            _log(conn, org_id, rec_id, at, actor, r.status, to, note)
        return self.get(org_id, rec_id)

    def apply(
        self,
        org_id: str,
        rec_id: str,
        actor: str,
        at: datetime,
        realized_co2e_grams: float | None = None,
        realized_cost: float | None = None,
        reason: str | None = None,
    ) -> Recommendation:
        extra = {
            "realized_savings_co2e_grams": realized_co2e_grams,
            "realized_savings_cost": realized_cost,
            "realized_reason": reason,
        }
        return self._move(org_id, rec_id, ("active", "stale"), "applied", actor, at, reason, extra)

    def ignore(self, org_id: str, rec_id: str, actor: str, at: datetime) -> Recommendation:
        return self._move(org_id, rec_id, ("active", "stale"), "ignored", actor, at)

    def restore(self, org_id: str, rec_id: str, actor: str, at: datetime) -> Recommendation:
        return self._move(org_id, rec_id, ("ignored",), "active", actor, at)


def _log(
    conn: Connection,
    org_id: str,
    rec_id: str,
    at: datetime,
    actor: str,
    from_status: str | None,
    to_status: str,
    note: str | None,
) -> None:
    conn.execute(
        insert(history).values(
            org_id=org_id,
            recommendation_id=rec_id,
            at=at,
            actor=actor,
            from_status=from_status,
            to_status=to_status,
            note=note,
        )
    )


# ------------------------------------------------------------------------------------- measured savings ledger


@dataclass(frozen=True)
class SavingsDay:
    """What an applied recommendation measurably saved on one UTC day (`core.insights.measured`)."""

    recommendation_id: str
    day: date
    org_id: str
    type: str
    co2e_grams: float  # signed
    cost: float | None
    events: int
    requests: int
    factors_version: str
    recorded_at: datetime


@dataclass(frozen=True)
class LedgerSum:
    days: int
    first_day: date
    last_day: date
    co2e_grams: float
    cost: float | None  # None when a day had no price


class SavingsLedger:
    """The measured savings ledger (table `recommendation_savings`): one row per applied recommendation and
    complete UTC day, written once — a recorded day is never rewritten (the figure a counter was raised by
    stays the figure on record)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def applied(self) -> list[Recommendation]:
        """Every org's applied recommendations (the recorder's worklist), oldest change first."""
        q = select(recs).where(recs.c.status == "applied").order_by(recs.c.status_changed_at, recs.c.id)
        with self.engine.connect() as conn:
            return [_rec(r) for r in conn.execute(q)]

    def last_days(self) -> dict[str, date]:
        """recommendation id → the last day on record."""
        q = select(ledger.c.recommendation_id, func.max(ledger.c.day)).group_by(ledger.c.recommendation_id)
        with self.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(q)}

    def record(self, days: Sequence[SavingsDay]) -> list[SavingsDay]:
        """Write the days not on record yet; returns those written (a day another process wrote first is
        skipped)."""
        written = []
        for d in days:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(ledger).values(**d.__dict__))
                written.append(d)
            except IntegrityError:
                continue
        return written

    def sums(self, org_id: str) -> dict[str, LedgerSum]:
        """recommendation id → its days on record, summed."""
        q = (
            select(
                ledger.c.recommendation_id,
                func.count(),
                func.min(ledger.c.day),
                func.max(ledger.c.day),
                func.sum(ledger.c.co2e_grams),
                func.sum(ledger.c.cost),
                func.count(ledger.c.cost),
            )
            .where(ledger.c.org_id == org_id)
            .group_by(ledger.c.recommendation_id)
        )
        with self.engine.connect() as conn:
            return {
                r[0]: LedgerSum(int(r[1]), r[2], r[3], float(r[4]), float(r[5]) if r[6] == r[1] else None)
                for r in conn.execute(q)
            }

    def days(self, org_id: str, rec_id: str) -> list[SavingsDay]:
        q = (
            select(ledger)
            .where(ledger.c.org_id == org_id, ledger.c.recommendation_id == rec_id)
            .order_by(ledger.c.day)
        )
        with self.engine.connect() as conn:
            return [SavingsDay(**dict(r._mapping)) for r in conn.execute(q)]
