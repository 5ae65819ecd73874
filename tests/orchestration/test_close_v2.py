"""The monthly close with methodology v2 figures: the receipt PDF calls an estimate an estimate and shows the
measured part apart, Scope 2 market-based, Scope 3 embodied and water; the audit pack carries the figures; and
a closed, signed month never changes — not when its events are re-enriched or new rows arrive after its
cutoff, nor when a newer close computes more figures than were frozen."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
import zipfile
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from controlplane import Orgs
from controlplane.billing import BillingPeriods, Credits, Receipts
from tests.orchestration.helpers import INVENTORY_CSV, now_iso, verify_independently
from warehouse.ledger import write_enriched

SEP = datetime(2026, 9, 1, 10, tzinfo=UTC)


def _pdf_text(pdf: bytes) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext not installed (apt-get install poppler-utils): cannot read the PDF")
    out = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True)
    return " ".join(out.stdout.decode().split())


def _snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _usage(make_enriched, org_id: str, n: int, *, revision: int = 0, **kw) -> list:
    return [
        make_enriched(
            f"{org_id}-{i}",
            revision,
            org_id=org_id,
            bucket_start=SEP + timedelta(days=i),
            output_tokens=400 + i,
            **kw,
        )
        for i in range(n)
    ]


def test_receipt_says_what_each_figure_is_and_a_closed_month_never_changes(close_env, make_enriched):
    env = close_env
    orgs = Orgs(env.engine)
    acme = orgs.create("acme", name="Acme Corp", plan_tier="growth")  # v2 figures, some energy metered
    bolt = orgs.create("bolt", name="Bolt Ltd", plan_tier="growth")  # enriched before v2: no v2 figure
    assert Credits(env.engine).load_csv(INVENTORY_CSV) == (3, 0)
    acme_events = _usage(make_enriched, acme.id, 4, v2=True) + [
        make_enriched("acme-m", org_id=acme.id, bucket_start=SEP, v2=True, measured=True, output_tokens=900)
    ]
    bolt_events = _usage(make_enriched, bolt.id, 3)
    write_enriched(env.client, acme_events + bolt_events)
    time.sleep(0.01)
    assert env.run("2026-09", cutoff=now_iso()).success

    periods = BillingPeriods(env.engine)
    p_acme, p_bolt = periods.get_for(acme.id, "2026-09"), periods.get_for(bolt.id, "2026-09")
    f = p_acme.figures
    assert f["co2_kg_market"] == pytest.approx(sum(e.co2_kg_market for e in acme_events), rel=1e-12)
    assert f["water_l_high"] == pytest.approx(sum(e.water_l_high for e in acme_events), rel=1e-12)
    assert f["coverage"]["events_embodied"] == 5 and f["measured"]["events"] == 1
    assert f["measured"]["co2_kg"] == acme_events[-1].co2_kg
    assert f["estimated"]["events"] == 4
    assert f["factors_versions"] == ["v1.0"]
    assert p_bolt.figures["co2_kg_market"] is None and p_bolt.figures["coverage"]["events_market"] == 0

    store = env.store()
    acme_receipt = Receipts(env.engine).for_period(p_acme.id)
    acme_pdf = _pdf_text(store.get(acme_receipt.pdf_key))
    assert "Measured CO2e" not in acme_pdf
    assert "of which measured" in acme_pdf and "of which estimated" in acme_pdf
    assert "1 events with metered energy" in acme_pdf
    for label in ("Scope 2 market-based", "Scope 3 embodied", "Water", "Energy", "Factor set v1.0"):
        assert label in acme_pdf, label
    assert f"estimated {f['co2_kg_market']:,.6f} kg" in acme_pdf
    bolt_pdf = _pdf_text(store.get(Receipts(env.engine).for_period(p_bolt.id).pdf_key))
    assert f"Estimated CO2e {p_bolt.figures['co2_kg']:,.6f} kg (range" in bolt_pdf
    assert "Measured" not in bolt_pdf and "of which" not in bolt_pdf
    assert "Scope 2 market-based not available" in bolt_pdf

    pack = zipfile.ZipFile(io.BytesIO(store.get(acme_receipt.audit_pack_key)))
    summary = json.loads(pack.read("summary.json"))
    assert summary["co2_kg_embodied"] == f["co2_kg_embodied"] and summary["measured"] == f["measured"]
    events = pq.read_table(io.BytesIO(pack.read("events/usage_events.parquet")))
    assert {"co2_kg_market", "water_l", "cost_usd", "energy_source", "measured_energy_j"} <= set(
        events.column_names
    )
    assert sorted(events.column("energy_source").to_pylist()) == ["estimated"] * 4 + ["measured"]
    breakdown = json.loads(pack.read("calculations/breakdown.json"))
    assert {r["energy_source"] for r in breakdown["rows"]} == {"estimated", "measured"}
    assert breakdown["rows"][0]["factors"]["grid_market_intensity_kg_per_kwh"] == 0.12
    assert "pipeline_v2" in json.loads(pack.read("methodology.json"))

    # after the close: the month's events re-enriched (new revisions with other figures) and new rows
    signed = {p.id: Receipts(env.engine).for_period(p.id) for p in (p_acme, p_bolt)}
    before = _snapshot(env.home / "artifacts")
    write_enriched(env.client, _usage(make_enriched, bolt.id, 3, revision=1, v2=True))
    write_enriched(
        env.client, _usage(make_enriched, acme.id, 4, revision=1, v2=True, grid_intensity_kg_per_kwh=0.9)
    )
    write_enriched(env.client, [make_enriched("acme-new", org_id=acme.id, bucket_start=SEP, v2=True)])
    assert env.run("2026-09").success
    for p in (p_acme, p_bolt):
        again = Receipts(env.engine).for_period(p.id)
        assert again == signed[p.id]  # payload, hash, signature, key: the signed receipt as issued
        assert verify_independently(again.payload, again.payload_hash, again.signature, again.public_key)
        assert periods.get_for(p.org_id, "2026-09").figures == p.figures
    assert _snapshot(env.home / "artifacts") == before

    # a month frozen by an older close (no v2 keys) re-runs under this code without a conflict, and keeps
    # what it froze, its work files and its PDF
    old = {
        k: v
        for k, v in p_bolt.figures.items()
        if k not in ("coverage", "measured", "estimated", "estimation")
    }
    old = {
        k: v
        for k, v in old.items()
        if not k.startswith(("co2_kg_market", "co2_kg_embodied", "water", "cost"))
    }
    with env.engine.begin() as conn:
        conn.execute(
            text("UPDATE billing_periods SET figures = :f WHERE id = :id"),
            {"f": json.dumps(old, sort_keys=True, separators=(",", ":")), "id": p_bolt.id},
        )
    assert env.run("2026-09").success
    assert periods.get_for(bolt.id, "2026-09").figures == old
    assert periods.get_for(bolt.id, "2026-09").status == "closed"
    after = _snapshot(env.home / "artifacts")
    bolt_pack = Receipts(env.engine).for_period(p_bolt.id).audit_pack_key
    # the pack's summary is the frozen figures (here: the ones this test froze in the older form)
    assert json.loads(zipfile.ZipFile(io.BytesIO(after.pop(bolt_pack))).read("summary.json")) == old
    before.pop(bolt_pack)
    assert after == before  # work files, PDFs, the other org's pack: as they were
