"""Batch state on SQLite and PostgreSQL: one runner wins a claim, a lease runs out, lines are recorded once
per custom_id with exact counts, status transitions are conditional, pages are newest first, profiles
replace per region."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane import Orgs
from controlplane.batches import Batches, IntensityProfiles, LineRow
from controlplane.errors import Conflict
from core.intensity import HourlyProfile

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _batch(repo: Batches, org_id: str, n: int, at: datetime, **kw):
    return repo.create(
        id=f"batch_{n:024x}",
        org_id=org_id,
        key_id="k",
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        status="validating",
        total=3,
        created_at=at,
        expires_at=at + timedelta(hours=24),
        **kw,
    )


def _row(cid: str, ok: bool = True) -> LineRow:
    return LineRow(custom_id=cid, line_no=1, ok=ok, output="{}", energy_j=1.0, co2_kg=1e-6, done_at=T0)


def test_claim_lease_lines_and_transitions(engine) -> None:
    org = Orgs(engine).create("acme")
    repo = Batches(engine)
    b = _batch(repo, org.id, 1, T0)
    assert repo.claim("r1", T0, 60).id == b.id
    assert repo.claim("r2", T0 + timedelta(seconds=30), 60) is None  # r1 holds the lease
    assert repo.claim("r2", T0 + timedelta(seconds=61), 60).id == b.id  # r1's lease ran out
    assert not repo.renew(b.id, "r1", T0 + timedelta(hours=1))
    repo.release(b.id, "r2")

    assert repo.transition(
        b.id, ("validating",), "in_progress", in_progress_at=T0, run_after=T0 + timedelta(hours=3)
    )
    assert not repo.transition(b.id, ("validating",), "failed")
    assert repo.claim("r1", T0 + timedelta(hours=1), 60) is None  # deferred: not due yet
    assert repo.claim("r1", T0 + timedelta(hours=3), 60).id == b.id
    repo.release(b.id, "r1")

    repo.record_lines(b.id, [_row("a"), _row("b", ok=False)])
    repo.record_lines(b.id, [_row("a"), _row("c")])  # "a" again: kept once
    got = repo.get(org.id, b.id)
    assert (got.completed, got.failed) == (2, 1) and repo.done_ids(b.id) == {"a", "b", "c"}

    assert repo.cancel(org.id, b.id).status == "cancelling"
    assert repo.cancel(org.id, b.id).status == "cancelling"  # again: a no-op
    assert repo.cancel("other-org", b.id) is None
    repo.transition(b.id, ("cancelling",), "cancelled", cancelled_at=T0)
    done = _batch(repo, org.id, 2, T0)
    repo.transition(done.id, ("validating",), "completed")
    with pytest.raises(Conflict):
        repo.cancel(org.id, done.id)


def test_pages_newest_first_and_scoped(engine) -> None:
    a, b = Orgs(engine).create("acme"), Orgs(engine).create("globex")
    repo = Batches(engine)
    ids = [_batch(repo, a.id, i, T0 + timedelta(minutes=i)).id for i in range(5)]
    _batch(repo, b.id, 99, T0)
    page, more = repo.page(a.id, None, 2)
    assert [x.id for x in page] == ids[:2:-1][:2] and more
    page2, more2 = repo.page(a.id, page[-1].id, 10)
    assert [x.id for x in page2] == ids[2::-1] and not more2
    assert repo.get(b.id, ids[0]) is None


def test_profiles_replace_per_region(engine) -> None:
    p = IntensityProfiles(engine)
    p.load([HourlyProfile(region="r1", hours=[0.1] * 24), HourlyProfile(region="r2", hours=[0.2] * 24)])
    p.load([HourlyProfile(region="r1", hours=[0.3] * 24)])
    assert p.get("r1").hours == [0.3] * 24 and p.get("r2").hours == [0.2] * 24 and p.get("r3") is None
    assert [x.region for x in p.all()] == ["r1", "r2"]
