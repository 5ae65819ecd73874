"""controlplane.gateway on SQLite and PostgreSQL: atomic balance debits, receipts scoped by org, and
the migration matching the metadata."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from nacl.signing import SigningKey
from sqlalchemy import func, select

from controlplane import Invalid, NotFound, Orgs, get_engine, upgrade
from controlplane.gateway import Balances, GatewayReceipts
from controlplane.schema import gateway_receipts, metadata
from core.receipts import sign, verify


@pytest.fixture
def cpe(db_url):
    engine = get_engine(db_url)
    upgrade(engine)
    return engine


GATEWAY_TABLES = {"org_balances", "gateway_receipts"}


def test_migration_matches_metadata(cpe):
    def ours(obj, name, type_, reflected, compare_to) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in GATEWAY_TABLES

    opts = {"compare_type": True, "include_object": ours}
    with cpe.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
    assert diffs == []
    assert GATEWAY_TABLES <= set(metadata.tables)


def test_balances(cpe):
    org = Orgs(cpe).create("acme")
    b = Balances(cpe)
    assert b.get(org.id) is None and not b.debit(org.id, 1)  # no prepaid account
    assert b.top_up(org.id, 100) == 100 and b.top_up(org.id, 50) == 150
    assert b.debit(org.id, 120) and not b.debit(org.id, 31) and b.debit(org.id, 30)
    assert b.get(org.id) == 0
    b.adjust_many({org.id: -5})  # an overshoot settled after the fact
    assert b.get(org.id) == -5 and not b.debit(org.id, 0)
    b.adjust_many({org.id: 10})
    assert b.get(org.id) == 5
    with pytest.raises(Invalid):
        b.top_up(org.id, 0)
    with pytest.raises(NotFound):
        b.top_up("no-such-org", 10)


def test_concurrent_debits_never_overspend(cpe):
    org = Orgs(cpe).create("acme")
    b = Balances(cpe)
    b.top_up(org.id, 1000)
    wins = []

    def spend() -> None:
        for _ in range(25):
            if b.debit(org.id, 7):
                wins.append(1)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1000 // 7 and b.get(org.id) == 1000 - 7 * (1000 // 7)


def test_receipts_are_scoped_by_org_and_idempotent(cpe):
    a, other = Orgs(cpe).create("acme"), Orgs(cpe).create("globex")
    sk = SigningKey.generate()
    rec = sign({"receipt_id": "rcpt_1", "energy_j": 0.31, "carbon_mg": 0.0123, "n": 3}, sk)
    store = GatewayReceipts(cpe)
    now = datetime.now(UTC)
    assert store.insert_many([("rcpt_1", a.id, now, rec)]) == 1
    assert store.insert_many([("rcpt_1", a.id, now, rec), ("rcpt_2", a.id, now, rec)]) == 1  # retried batch
    got = store.get(a.id, "rcpt_1")
    assert got == rec and verify(got, sk.verify_key)
    assert store.get(other.id, "rcpt_1") is None
    with cpe.connect() as conn:
        stored = conn.execute(
            select(func.count()).select_from(gateway_receipts).where(gateway_receipts.c.org_id == a.id)
        ).scalar_one()
    assert stored == 2
