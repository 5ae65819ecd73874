"""Credit inventory and allocation: CSV loading, and concurrent closes that never share a serial, with
gap-free receipt numbers (threads, each with its own connection, on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from controlplane import Orgs
from controlplane.billing import BillingPeriods, Credits, Receipts, parse_block, tonnes_needed
from controlplane.errors import Conflict, Invalid


def test_parse_block_forms():
    b = parse_block("Verra", "VCS-981-2023-000001-000003", "P", 2023, 3)
    assert (b.prefix, b.first_number, b.width) == ("VCS-981-2023-", 1, 6)
    b = parse_block("Verra", "VCS-1205-2024-000001", "P", "2024", "20")
    assert (b.prefix, b.first_number, b.width, b.tonnes) == ("VCS-1205-2024-", 1, 6, 20)
    with pytest.raises(Invalid):
        parse_block("Verra", "VCS-1-000001-000005", "P", 2024, 4)  # 5 serials, 4 tonnes
    with pytest.raises(Invalid):
        parse_block("Verra", "VCS-1-000001", "P", 2024, 0)
    assert tonnes_needed(0) == 0 and tonnes_needed(0.001) == 1 and tonnes_needed(1000.0) == 1
    assert tonnes_needed(1000.001) == 2


def test_load_csv_is_idempotent_and_rejects_overlaps(engine):
    credits = Credits(engine)
    csv_text = "registry,serial_block,project,vintage,tonnes\nVerra,VCS-9-2024-000001-000010,P,2024,10\n"
    assert credits.load_csv(csv_text) == (1, 0)
    assert credits.load_csv(csv_text) == (0, 1)
    with pytest.raises(Conflict):
        credits.load_csv(
            "registry,serial_block,project,vintage,tonnes\nVerra,VCS-9-2024-000005-000012,P,2024,8\n"
        )
    with pytest.raises(Invalid):
        credits.load_csv("registry,serial_block\nVerra,VCS-1\n")
    assert sum(b.available for b in credits.blocks()) == 10


def test_concurrent_closes_never_share_a_serial(engine):
    orgs = Orgs(engine)
    credits = Credits(engine)
    credits.load_csv(
        "registry,serial_block,project,vintage,tonnes\n"
        "Verra,VCS-1-2023-000001-000005,A,2023,5\n"
        "Verra,VCS-2-2024-000001-000007,B,2024,7\n"
        "Gold Standard,GS-3-2024-000001-000030,C,2024,30\n"
    )
    periods = BillingPeriods(engine)
    targets = []
    for i in range(12):
        org = orgs.create(f"org-{i}", plan_tier="growth")
        targets.append((periods.ensure(org.id, "2026-10").id, 1 + i % 3))  # 1, 2 or 3 t each: 24 t
    barrier = threading.Barrier(len(targets) * 2)

    def close(period_id: str, tonnes: int):
        barrier.wait()
        allocs = credits.allocate(period_id, tonnes)
        receipt = Receipts(engine).issue(
            period_id,
            lambda serial: (
                {"co2_retired_kg": 1.0},
                {
                    "canonical": "{}",
                    "sha256": "0" * 64,
                    "signature": "s",
                    "key_version": "k",
                    "public_key": "p",
                },
            ),
        )
        return period_id, [s for a in allocs for s in a.serials], receipt.serial_number

    # every period is closed twice at once (a re-run racing the first run): same result, no double allocation
    with ThreadPoolExecutor(max_workers=len(targets) * 2) as pool:
        results = list(pool.map(lambda t: close(*t), targets + targets))

    by_period: dict[str, tuple] = {}
    for pid, serials, receipt_serial in results:
        if pid in by_period:
            assert by_period[pid] == (serials, receipt_serial)  # the racing duplicate got the same answer
        by_period[pid] = (serials, receipt_serial)
    all_serials = [s for serials, _ in by_period.values() for s in serials]
    assert len(all_serials) == len(set(all_serials)) == sum(t for _, t in targets)
    for pid, tonnes in targets:
        assert len(by_period[pid][0]) == tonnes
    assert sorted(r for _, r in by_period.values()) == [
        f"CL-202610-{i:05d}" for i in range(1, 13)
    ]  # gap-free
    blocks = {b.serial_block: b for b in credits.blocks()}
    assert sum(b.allocated_tonnes for b in blocks.values()) == 24
    assert blocks["VCS-1-2023-000001-000005"].allocated_tonnes == 5  # oldest vintage used up first
    assert sum(b.available for b in credits.blocks()) == 42 - 24


def test_exhausted_inventory_allocates_nothing(engine):
    org = Orgs(engine).create("big", plan_tier="scale")
    credits = Credits(engine)
    credits.load_csv(
        "registry,serial_block,project,vintage,tonnes\nVerra,VCS-1-2023-000001-000002,A,2023,2\n"
    )
    period = BillingPeriods(engine).ensure(org.id, "2026-10")
    with pytest.raises(Invalid, match="exhausted"):
        credits.allocate(period.id, 3)
    assert sum(b.available for b in credits.blocks()) == 2
    assert credits.allocations(period.id) == []
