"""Recommendations' state: a run updates by identity (no twins), stale and back, ignored/applied keep their
status, the transitions and their conflicts, history, tenancy; a concurrent run on a new identity. SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from controlplane import Conflict, NotFound, Orgs
from controlplane.recommendations import Recommendations
from core.insights import Finding

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def f(subject: str, grams: float = 100.0, kind: str = "MODEL_RIGHTSIZING") -> Finding:
    return Finding(kind, "model", subject, "p1", "gpt-4o", "low", f"{grams} g", grams, 1.0, {"events": 3})


def test_sync_updates_goes_stale_and_comes_back(engine):
    a = Orgs(engine).create("acme")
    repo = Recommendations(engine)
    [x] = repo.sync(a.id, [f("s1")], T0)
    assert x.status == "active" and x.first_seen_at == T0 and x.evidence == {"events": 3}
    [y] = repo.sync(a.id, [f("s1", 250.0)], T0 + timedelta(hours=1))
    assert y.id == x.id and y.potential_savings_co2e_grams == 250.0 and y.first_seen_at == T0
    assert y.last_seen_at == T0 + timedelta(hours=1) and len(repo.list(a.id)) == 1
    assert repo.sync(a.id, [], T0 + timedelta(hours=2)) == []
    assert repo.get(a.id, x.id).status == "stale"
    [z] = repo.sync(a.id, [f("s1")], T0 + timedelta(hours=3))
    assert z.id == x.id and z.status == "active"
    assert [(c.from_status, c.to_status, c.actor) for c in repo.history(a.id)] == [
        (None, "active", "engine"), ("active", "stale", "engine"), ("stale", "active", "engine")
    ]  # fmt: skip
    assert len(repo.history(a.id, start=T0 + timedelta(hours=2))) == 2
    assert repo.history(a.id, end=T0) == []


def test_transitions_conflicts_and_tenancy(engine):
    a, b = Orgs(engine).create("acme"), Orgs(engine).create("beta")
    repo = Recommendations(engine)
    [x, y] = repo.sync(a.id, [f("s1"), f("s2")], T0)
    with pytest.raises(NotFound):
        repo.ignore(b.id, x.id, "api_key:b", T0)
    with pytest.raises(Conflict):
        repo.restore(a.id, x.id, "api_key:a", T0)  # not ignored
    assert repo.ignore(a.id, x.id, "api_key:a", T0).status == "ignored"
    with pytest.raises(Conflict):
        repo.apply(a.id, x.id, "api_key:a", T0)
    # a re-run refreshes an ignored one's figures but keeps it ignored; an applied one keeps what it claimed
    applied = repo.apply(a.id, y.id, "jwt:alice", T0, -3.0, 1.0, "longer answers")
    assert (applied.status, applied.status_changed_by, applied.realized_reason) == ("applied", "jwt:alice",
                                                                                      "longer answers")  # fmt: skip
    repo.sync(a.id, [f("s1", 999.0), f("s2", 999.0)], T0 + timedelta(hours=1))
    assert (
        repo.get(a.id, x.id).status == "ignored" and repo.get(a.id, x.id).potential_savings_co2e_grams == 999
    )
    assert repo.get(a.id, y.id).potential_savings_co2e_grams == 100.0
    repo.sync(a.id, [], T0 + timedelta(hours=2))  # neither goes stale
    assert [r.status for r in repo.list(a.id)] == ["ignored", "applied"]  # by saving: 999 g, then 100 g
    assert repo.restore(a.id, x.id, "api_key:a", T0).status == "active"
    assert repo.list(b.id) == [] and repo.history(b.id) == []


def test_a_concurrent_run_on_a_new_identity_updates_instead_of_failing(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: the race needs PostgreSQL's concurrent transactions")
    a = Orgs(engine).create("acme")
    repo = Recommendations(engine)
    raced = []

    def other_run_first(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO recommendations ") and not raced:
            raced.append(True)  # another API process inserts and commits the same identity first
            repo.sync(a.id, [f("s1", 1.0)], T0)

    event.listen(engine, "before_cursor_execute", other_run_first)
    try:
        [x] = repo.sync(a.id, [f("s1", 2.0)], T0 + timedelta(minutes=1))
    finally:
        event.remove(engine, "before_cursor_execute", other_run_first)
    assert raced and x.potential_savings_co2e_grams == 2.0
    assert [r.id for r in repo.list(a.id)] == [x.id]
