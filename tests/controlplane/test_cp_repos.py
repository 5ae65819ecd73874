"""Repositories: every rule, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from controlplane import (
    DEFAULT_PROJECT_NAME,
    ApiKeys,
    Conflict,
    FactorVersions,
    Invalid,
    NotFound,
    Orgs,
    Projects,
    Workloads,
)
from controlplane.keys import LAST_USED_RESOLUTION
from controlplane.schema import api_keys
from tests.fixtures_controlplane import tiny_factors

# --------------------------------------------------------------------------------------------- orgs


def test_org_create_and_lookup(engine):
    orgs = Orgs(engine)
    org = orgs.create("Acme-Corp", name="Acme Corp", plan_tier="starter")
    assert org.slug == "acme-corp" and org.name == "Acme Corp" and org.plan_tier == "starter"
    assert org.created_at.tzinfo is not None
    assert orgs.get(org.id) == org
    assert orgs.get_by_slug("ACME-corp") == org
    assert orgs.get("nope") is None
    assert orgs.create("beta").name == "beta"
    assert [o.slug for o in orgs.list()] == ["acme-corp", "beta"]


def test_org_rules(engine):
    orgs = Orgs(engine)
    org = orgs.create("acme")
    with pytest.raises(Conflict):
        orgs.create("acme")
    for bad in ["", "-acme", "acme-", "ac me", "a" * 65, "acme_corp"]:
        with pytest.raises(Invalid):
            orgs.create(bad)
    with pytest.raises(Invalid):
        orgs.create("other", plan_tier="platinum")
    assert orgs.set_plan(org.id, "growth").plan_tier == "growth"
    with pytest.raises(Invalid):
        orgs.set_plan(org.id, "platinum")
    with pytest.raises(NotFound):
        orgs.set_plan("missing", "growth")
    assert orgs.set_stripe_customer(org.id, "cus_123").stripe_customer_id == "cus_123"


# --------------------------------------------------------------------------------------------- api keys


def test_key_create_format_and_storage(engine):
    org = Orgs(engine).create("acme")
    keys = ApiKeys(engine)
    key, plaintext = keys.create(org.id, "admin, read", name="ci")
    assert plaintext.startswith("js_live_") and len(plaintext) == len("js_live_") + 43
    assert key.prefix == plaintext[:12] and key.prefix.startswith("js_live_")
    assert key.scopes == ("read", "admin")  # canonical order
    assert key.name == "ci" and key.org_id == org.id
    with engine.connect() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.id == key.id)).mappings().one()
    assert row["key_hash"] == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in {str(v) for v in row.values()}
    other, other_plain = keys.create(org.id, ["read"])
    assert other_plain != plaintext and other.name  # a default name
    assert [k.id for k in keys.list(org.id)] == [key.id, other.id]


def test_key_scopes_validated(engine):
    org = Orgs(engine).create("acme")
    keys = ApiKeys(engine)
    with pytest.raises(Invalid):
        keys.create(org.id, [])
    with pytest.raises(Invalid):
        keys.create(org.id, "read,root")
    with pytest.raises(Invalid):
        keys.create(org.id, ["read"], expires_at=datetime(2030, 1, 1))  # naive
    with pytest.raises(NotFound):
        keys.create("no-such-org", ["read"])
    key, _ = keys.create(org.id, ["read", "ingest", "admin", "billing", "read"])
    assert key.scopes == ("read", "ingest", "admin", "billing")


def test_key_authenticate(engine):
    org = Orgs(engine).create("acme")
    keys = ApiKeys(engine)
    key, plaintext = keys.create(org.id, ["read"])
    got = keys.authenticate(plaintext)
    assert got is not None and got.id == key.id and got.org_id == org.id and got.last_used_at is not None
    # unknown, malformed, tampered
    assert keys.authenticate(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert keys.authenticate("js_live_short") is None
    assert keys.authenticate("") is None
    assert keys.authenticate(plaintext + "x") is None
    assert keys.authenticate("Bearer " + plaintext) is None


def test_key_prefix_collision_still_exact(engine):
    """Two keys sharing the display prefix: only the exact plaintext authenticates."""
    org = Orgs(engine).create("acme")
    keys = ApiKeys(engine)
    a, pa = keys.create(org.id, ["read"])
    b, pb = keys.create(org.id, ["admin"])
    with engine.begin() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id == b.id).values(prefix=a.prefix))
    assert keys.authenticate(pa).id == a.id
    assert keys.authenticate(pb) is None  # pb's own prefix no longer matches its row: not found by prefix


def test_key_revoked_and_expired(engine):
    org = Orgs(engine).create("acme")
    keys = ApiKeys(engine)
    now = datetime.now(UTC)
    key, plaintext = keys.create(org.id, ["read"], expires_at=now + timedelta(hours=1))
    assert keys.authenticate(plaintext, now=now) is not None
    assert keys.authenticate(plaintext, now=now + timedelta(hours=2)) is None  # expired
    revoked = keys.revoke(key.id, org_id=org.id)
    assert revoked.revoked_at is not None
    assert keys.authenticate(plaintext, now=now) is None
    again = keys.revoke(key.id)  # idempotent, keeps the first time
    assert again.revoked_at == revoked.revoked_at


def test_key_revoke_is_org_scoped(engine):
    orgs = Orgs(engine)
    a, b = orgs.create("a"), orgs.create("b")
    keys = ApiKeys(engine)
    key, plaintext = keys.create(a.id, ["read"])
    with pytest.raises(NotFound):
        keys.revoke(key.id, org_id=b.id)
    assert keys.authenticate(plaintext) is not None
    assert keys.get(key.id, org_id=b.id) is None
    assert keys.list(b.id) == []
    with pytest.raises(NotFound):
        keys.revoke("missing")


def test_last_used_at_written_at_most_once_a_minute(engine):
    org = Orgs(engine).create("acme")
    keys = ApiKeys(engine)
    key, plaintext = keys.create(org.id, ["read"])
    t0 = datetime.now(UTC)

    def stored():
        with engine.connect() as conn:
            return conn.execute(select(api_keys.c.last_used_at).where(api_keys.c.id == key.id)).scalar_one()

    assert stored() is None
    keys.authenticate(plaintext, now=t0)
    assert abs(stored() - t0) < timedelta(milliseconds=1)
    keys.authenticate(plaintext, now=t0 + timedelta(seconds=30))
    assert abs(stored() - t0) < timedelta(milliseconds=1)  # not rewritten within the minute
    later = t0 + LAST_USED_RESOLUTION + timedelta(seconds=1)
    keys.authenticate(plaintext, now=later)
    assert abs(stored() - later) < timedelta(milliseconds=1)


# --------------------------------------------------------------------------------------------- projects


def test_default_project_on_demand(engine):
    org = Orgs(engine).create("acme")
    projects = Projects(engine)
    assert projects.list(org.id) == []
    d1 = projects.ensure_default_project(org.id)
    d2 = projects.ensure_default_project(org.id)
    assert d1.id == d2.id and d1.is_default and d1.name == DEFAULT_PROJECT_NAME
    assert [p.id for p in projects.list(org.id)] == [d1.id]
    with pytest.raises(NotFound):
        projects.ensure_default_project("no-such-org")


def test_default_project_concurrent(engine):
    org = Orgs(engine).create("acme")
    projects = Projects(engine)
    results, errors = [], []

    def worker():
        try:
            results.append(projects.ensure_default_project(org.id).id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert sum(p.is_default for p in projects.list(org.id)) == 1


def test_project_create_rules(engine):
    org = Orgs(engine).create("acme")
    projects = Projects(engine)
    p = projects.create(org.id, "  Production   App ")
    assert p.name == "Production App" and not p.is_default
    with pytest.raises(Conflict):
        projects.create(org.id, "Production App")
    with pytest.raises(Conflict):
        projects.create(org.id, "Default")  # taken by the default project (created on demand)
    with pytest.raises(Invalid):
        projects.create(org.id, "   ")
    with pytest.raises(Invalid):
        projects.create(org.id, "x" * 101)
    names = [x.name for x in projects.list(org.id)]
    assert names == ["Default", "Production App"]  # default first
    assert projects.count(org.id) == 2
    assert [x.name for x in projects.list(org.id, offset=1, limit=1)] == ["Production App"]


def test_project_names_unique_per_org_only(engine):
    orgs = Orgs(engine)
    a, b = orgs.create("a"), orgs.create("b")
    projects = Projects(engine)
    projects.create(a.id, "Shared")
    projects.create(b.id, "Shared")
    assert projects.get(b.id, projects.list(a.id)[1].id) is None  # another org's id is invisible


def test_project_rename_rules(engine):
    org = Orgs(engine).create("acme")
    projects = Projects(engine)
    p = projects.create(org.id, "One")
    projects.create(org.id, "Two")
    default = projects.ensure_default_project(org.id)
    assert projects.rename(org.id, p.id, "Uno").name == "Uno"
    assert projects.rename(org.id, p.id, "Uno").name == "Uno"  # same name: no-op
    with pytest.raises(Conflict):
        projects.rename(org.id, p.id, "Two")
    with pytest.raises(Conflict):
        projects.rename(org.id, p.id, "Default")
    with pytest.raises(Invalid):
        projects.rename(org.id, default.id, "Main")
    with pytest.raises(NotFound):
        projects.rename(org.id, "missing", "X")


def test_project_delete_rules(engine):
    org = Orgs(engine).create("acme")
    projects, workloads = Projects(engine), Workloads(engine)
    default = projects.ensure_default_project(org.id)
    p = projects.create(org.id, "Staging")
    with pytest.raises(Invalid):
        projects.delete(org.id, default.id)
    w = workloads.create(org.id, p.id, "connection", "conn-1")
    assert projects.get(org.id, p.id).workload_count == 1
    with pytest.raises(Conflict):
        projects.delete(org.id, p.id)
    workloads.remap(org.id, "connection", "conn-1", default.id)
    projects.delete(org.id, p.id)
    assert projects.get(org.id, p.id) is None
    with pytest.raises(NotFound):
        projects.delete(org.id, p.id)
    # history: the old workload still points at the deleted project, whose name stays resolvable
    old = workloads.get(org.id, w.id)
    assert old.project_id == p.id and not old.is_active
    assert projects.names(org.id)[p.id] == "Staging"
    assert p.id not in projects.names(org.id, include_deleted=False)
    # the name is free again
    assert projects.create(org.id, "Staging").id != p.id


def test_project_is_org_scoped(engine):
    orgs = Orgs(engine)
    a, b = orgs.create("a"), orgs.create("b")
    projects = Projects(engine)
    p = projects.create(a.id, "Secret")
    assert projects.get(b.id, p.id) is None
    with pytest.raises(NotFound):
        projects.rename(b.id, p.id, "Mine")
    with pytest.raises(NotFound):
        projects.delete(b.id, p.id)
    assert projects.get(a.id, p.id).name == "Secret"
    assert all(x.org_id == b.id for x in projects.list(b.id))


# --------------------------------------------------------------------------------------------- workloads


def test_workload_remap_keeps_history(engine):
    org = Orgs(engine).create("acme")
    projects, workloads = Projects(engine), Workloads(engine)
    default = projects.ensure_default_project(org.id)
    prod = projects.create(org.id, "Prod")
    first = workloads.ensure_active(org.id, "connection", "conn-1")
    assert first.project_id == default.id and first.is_active
    assert workloads.ensure_active(org.id, "connection", "conn-1").id == first.id
    second = workloads.remap(org.id, "connection", "conn-1", prod.id)
    assert second.id != first.id and second.project_id == prod.id and second.is_active
    old = workloads.get(org.id, first.id)
    assert not old.is_active and old.deactivated_at is not None and old.project_id == default.id
    assert workloads.active(org.id, "connection", "conn-1").id == second.id
    assert workloads.remap(org.id, "connection", "conn-1", prod.id).id == second.id  # no-op
    assert [w.id for w in workloads.list(org.id)] == [first.id, second.id]
    assert [w.id for w in workloads.list(org.id, prod.id, active_only=True)] == [second.id]
    assert {p.id: p.workload_count for p in projects.list(org.id)} == {default.id: 0, prod.id: 1}
    assert projects.get(org.id, default.id).workload_count == 0


def test_workload_rules(engine):
    orgs = Orgs(engine)
    a, b = orgs.create("a"), orgs.create("b")
    projects, workloads = Projects(engine), Workloads(engine)
    pa = projects.create(a.id, "A1")
    pb = projects.create(b.id, "B1")
    workloads.create(a.id, pa.id, "gateway_key", "key-1")
    with pytest.raises(Conflict):  # one active workload per source
        workloads.create(a.id, pa.id, "gateway_key", "key-1")
    with pytest.raises(NotFound):  # another org's project
        workloads.create(a.id, pb.id, "gateway_key", "key-2")
    with pytest.raises(NotFound):
        workloads.remap(a.id, "gateway_key", "key-1", pb.id)
    with pytest.raises(Invalid):
        workloads.create(a.id, pa.id, "spreadsheet", "x")
    assert workloads.active(b.id, "gateway_key", "key-1") is None
    assert workloads.list(b.id) == []
    # remap of a source with no active workload just maps it
    assert workloads.remap(a.id, "connection", "new-conn", pa.id).is_active


# --------------------------------------------------------------------------------------------- factor versions


def test_factor_versions_seed(engine):
    repo = FactorVersions(engine)
    assert repo.current() is None and repo.list() == []
    current = repo.ensure_seeded()
    assert current.version == "v2.0" and current.tier_count >= 1
    assert repo.ensure_seeded().version == "v2.0"
    assert [fv.version for fv in repo.list()] == ["v2.0", "v1.0"]
    fs = current.factor_set
    assert fs.version == "v2.0" and len(fs.tiers) == current.tier_count
    from core.methodology import FACTORS_DIR

    assert current.body == (FACTORS_DIR / "v2.0.yaml").read_text(encoding="utf-8")
    v1 = repo.get("v1.0")
    assert v1 is not None and v1.body == (FACTORS_DIR / "v1.0.yaml").read_text(encoding="utf-8")


def test_factor_versions_publish(engine):
    repo = FactorVersions(engine)
    repo.ensure_seeded()
    text = tiny_factors("v9.0", "2030-01-01")
    fv = repo.publish(text)
    assert fv.version == "v9.0" and fv.tier_count == 2 and fv.body == text
    assert fv.published_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert repo.current().version == "v9.0"
    assert repo.get("v9.0").body == text
    assert repo.get("v0.1") is None
    with pytest.raises(Conflict):
        repo.publish(text)
    with pytest.raises(Conflict):
        repo.publish(tiny_factors("v9.0", "2031-01-01"))  # same version, other content
    # an older published_at does not become current; list is newest first
    repo.publish(tiny_factors("v0.5", "2001-01-01"))
    assert repo.current().version == "v9.0"
    assert [v.version for v in repo.list()] == ["v9.0", "v2.0", "v1.0", "v0.5"]


def test_factor_versions_same_day_later_publication_wins(engine):
    repo = FactorVersions(engine)
    repo.publish(tiny_factors("v2.0", "2030-01-01"))
    repo.publish(tiny_factors("v2.1", "2030-01-01"))
    assert repo.current().version == "v2.1"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("version: [unclosed", "YAML"),
        ("- just a list", "mapping"),
        (tiny_factors("v9.0").replace("default: 0.37", "default: 0.00037"), "kg CO2e/kWh"),
        (tiny_factors("v9.0").replace("fallback_tier: large", "fallback_tier: huge"), "fallback_tier"),
        (tiny_factors("nine"), "version"),
    ],
)
def test_factor_versions_reject_invalid(engine, text, needle):
    repo = FactorVersions(engine)
    with pytest.raises(Invalid) as err:
        repo.publish(text)
    assert needle in str(err.value)
    assert repo.list() == []
