"""The monthly close job (Dagster, in-process) over usage made by the real pipeline path: figures, credit
retirement, signed receipts verified independently, PDF, audit pack, byte-identical re-runs, late events."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import time
import zipfile
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from controlplane import Orgs
from controlplane.billing import BillingPeriods, Credits, Receipts
from tests.orchestration.helpers import INVENTORY_CSV, now_iso, pipeline_usage, verify_independently

SEP = datetime(2026, 9, 1, tzinfo=UTC)
AUG = datetime(2026, 8, 1, tzinfo=UTC)


def _snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _png_is_not_blank(pdf: bytes, tmp_path) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm not installed (apt-get install poppler-utils): cannot render the PDF")
    from PIL import Image

    src = tmp_path / "receipt.pdf"
    src.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-singlefile", str(src), str(tmp_path / "page")], check=True
    )
    img = Image.open(tmp_path / "page.png").convert("L")
    hist = img.histogram()
    dark = sum(hist[:200])  # pixels that are not (near-)white
    assert img.size[0] > 300 and img.size[1] > 400
    assert dark / (img.size[0] * img.size[1]) > 0.02, "the rendered receipt is blank"


def test_monthly_close_end_to_end(close_env, tmp_path):
    env = close_env
    orgs = Orgs(env.engine)
    acme = orgs.create("acme", name="Acme Corp", plan_tier="growth")
    beta = orgs.create("beta", plan_tier="free")
    assert Credits(env.engine).load_csv(INVENTORY_CSV) == (3, 0)

    sep_events = pipeline_usage(env.client, [acme.id, beta.id], SEP, 300, seed=1)
    pipeline_usage(env.client, [acme.id], AUG, 20, seed=2)  # another month: not in September's close
    acme_sep = [e for e in sep_events if e.org_id == acme.id]
    time.sleep(0.01)
    cutoff = now_iso()

    result = env.run("2026-09", cutoff=cutoff)
    assert result.success
    mats = result.asset_materializations_for_node("close_totals")
    assert mats[0].metadata["warehouse_mode"].value == "direct"

    periods = BillingPeriods(env.engine)
    p_acme = periods.get_for(acme.id, "2026-09")
    p_beta = periods.get_for(beta.id, "2026-09")
    assert p_acme.status == "closed" and p_beta.status == "closed"
    assert periods.get_for(acme.id, "2026-08") is None

    # figures: the events' own values, summed independently
    f = p_acme.figures
    assert f["totals"]["events"] == len(acme_sep)
    assert math.isclose(f["co2_kg"], math.fsum(e.co2_kg for e in acme_sep), rel_tol=1e-12)
    upper = math.fsum(e.co2_kg_high for e in acme_sep)
    assert math.isclose(f["co2_kg_high"], upper, rel_tol=1e-12)
    assert f["co2_retired_kg"] >= upper and f["co2_retired_kg"] - upper < 1e-5  # upper bound, to the mg
    assert f["totals"]["output_tokens"] == sum(e.output_tokens for e in acme_sep)
    assert f["adjustment_totals"]["events"] == 0

    # credits cover the upper bound, oldest vintage first; the free org gets none
    allocations = Credits(env.engine).allocations(p_acme.id)
    serials = [s for a in allocations for s in a.serials]
    assert len(serials) == math.ceil(f["co2_retired_kg"] / 1000)
    assert serials[0] == "VCS-981-2023-000001"
    assert Credits(env.engine).allocations(p_beta.id) == []
    assert Receipts(env.engine).for_period(p_beta.id) is None

    # the receipt verifies with an independent verifier; any changed field fails
    receipt = Receipts(env.engine).for_period(p_acme.id)
    assert receipt.serial_number == "CL-202609-00001"
    assert receipt.payload == {
        "serial_number": "CL-202609-00001",
        "co2_retired_kg": f["co2_retired_kg"],
        "credit_serial_numbers": serials,
        "period_start": "2026-09-01",
        "period_end": "2026-09-30",
    }
    args = (receipt.payload_hash, receipt.signature, receipt.public_key)
    assert verify_independently(receipt.payload, *args)
    for field, value in [
        ("co2_retired_kg", receipt.payload["co2_retired_kg"] * 0.5),
        ("serial_number", "CL-202609-00002"),
        ("credit_serial_numbers", ["VCS-981-2023-000002"]),
        ("period_end", "2026-09-29"),
    ]:
        assert not verify_independently({**receipt.payload, field: value}, *args), field
        # even with the hash recomputed for the tampered payload, the signature fails
        tampered = {**receipt.payload, field: value}
        import hashlib

        h = hashlib.sha256(json.dumps(tampered, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        assert not verify_independently(tampered, h, receipt.signature, receipt.public_key)

    # the PDF renders to a non-blank page
    store = env.store()
    pdf = store.get(receipt.pdf_key)
    assert pdf.startswith(b"%PDF") and receipt.pdf_sha256
    _png_is_not_blank(pdf, tmp_path)

    # the audit pack: every file is in the signed manifest with its SHA-256
    pack = store.get(receipt.audit_pack_key)
    zf = zipfile.ZipFile(io.BytesIO(pack))
    manifest = json.loads(zf.read("manifest.json"))
    assert verify_independently(
        manifest["payload"], manifest["sha256"], manifest["signature"], receipt.public_key
    )
    listed = {e["path"]: e for e in manifest["payload"]["files"]}
    assert set(zf.namelist()) == set(listed) | {"manifest.json"}
    import hashlib

    for path, entry in listed.items():
        blob = zf.read(path)
        assert hashlib.sha256(blob).hexdigest() == entry["sha256"], path
        assert len(blob) == entry["bytes"]
    assert {
        "receipts/CL-202609-00001.pdf",
        "calculations/breakdown.json",
        "events/usage_events.parquet",
        "methodology.json",
        "summary.json",
        "credits.json",
    } <= set(listed)
    assert zf.read("receipts/CL-202609-00001.pdf") == pdf
    events = pq.read_table(io.BytesIO(zf.read("events/usage_events.parquet")))
    assert events.num_rows == len(acme_sep)
    assert set(events.column("org_id").to_pylist()) == {acme.id}
    breakdown = json.loads(zf.read("calculations/breakdown.json"))
    assert sum(r["events"] for r in breakdown["rows"]) == len(acme_sep)
    assert math.isclose(
        math.fsum(r["results"]["co2_kg"] for r in breakdown["rows"]), f["co2_kg"], rel_tol=1e-9
    )
    row = breakdown["rows"][0]
    assert {"day", "model", "project_id", "tokens", "factors", "results"} <= set(row)
    assert "v1.0" in json.loads(zf.read("methodology.json"))["factor_versions"]

    # a re-run of the partition: same serials, byte-identical files, nothing allocated twice
    before = _snapshot(env.home / "artifacts")
    allocated = sum(b.allocated_tonnes for b in Credits(env.engine).blocks())
    (env.home / "artifacts" / receipt.audit_pack_key).unlink()  # regenerated, not just left in place
    again = env.run("2026-09")
    assert again.success
    assert _snapshot(env.home / "artifacts") == before
    assert Receipts(env.engine).for_period(p_acme.id) == receipt
    assert sum(b.allocated_tonnes for b in Credits(env.engine).blocks()) == allocated

    # a late September event (ingested after the cutoff) never changes the closed period: it is next month's
    # adjustment
    late = pipeline_usage(env.client, [acme.id], SEP, 1, seed=99)[0]
    assert env.run("2026-09").success
    assert BillingPeriods(env.engine).get_for(acme.id, "2026-09").figures == f
    assert _snapshot(env.home / "artifacts") == before
    nov = env.run("2026-10", org="acme", cutoff=now_iso())
    assert nov.success
    p_nov = periods.get_for(acme.id, "2026-10")
    assert p_nov.status == "closed"
    assert p_nov.figures["adjustment_totals"]["events"] == 1
    assert p_nov.figures["month_totals"]["events"] == 0
    assert math.isclose(p_nov.figures["co2_kg_high"], late.co2_kg_high, rel_tol=1e-12)
    nov_receipt = Receipts(env.engine).for_period(p_nov.id)
    assert nov_receipt.serial_number == "CL-202610-00001"
    assert not set(nov_receipt.payload["credit_serial_numbers"]) & set(serials)
    assert verify_independently(
        nov_receipt.payload, nov_receipt.payload_hash, nov_receipt.signature, nov_receipt.public_key
    )
