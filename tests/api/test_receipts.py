"""Receipts, audit packs and public verification over a real monthly close (Dagster job in-process over
pipeline-made usage in the test warehouse)."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime

import pytest

from controlplane import Orgs
from controlplane.billing import Credits
from tests.api.billing_app import with_close_routes
from tests.fixtures_api import client_for
from tests.orchestration.helpers import INVENTORY_CSV, now_iso, pipeline_usage, verify_independently

pytestmark = pytest.mark.anyio


@pytest.fixture
def closed(settings, engine, warehouse, tenants, db_url):
    """acme (growth) and beta (free) with September usage, closed by the Dagster job."""
    from orchestration.definitions import run_close
    from orchestration.resources import (
        ArtifactsResource,
        ControlPlaneResource,
        SigningResource,
        WarehouseResource,
    )

    client, database = warehouse
    acme, beta = tenants
    Orgs(engine).set_plan(acme.org.id, "growth")
    Credits(engine).load_csv(INVENTORY_CSV)
    pipeline_usage(client, [acme.org.id, beta.org.id], datetime(2026, 9, 1, tzinfo=UTC), 60)
    home = str(settings.home)
    result = run_close(
        "2026-09",
        cutoff=now_iso(),
        warehouse=WarehouseResource(database=database, home=home),
        controlplane=ControlPlaneResource(database_url=db_url),
        artifacts=ArtifactsResource(home=home),
        signing=SigningResource(home=home),
    )
    assert result.success
    return acme, beta


@pytest.fixture
async def rapi(make_app):
    async with client_for(with_close_routes(make_app())) as c:
        yield c


async def test_receipts_pdf_and_audit_pack(rapi, closed):
    acme, beta = closed
    r = await rapi.get("/api/v1/receipts", headers=beta.h)
    assert r.status_code == 402
    assert r.json() == {
        "detail": "Receipts require a paid plan. Upgrade at /api/v1/billing/upgrade.",
        "upgrade_url": "/api/v1/billing/upgrade",
    }
    assert (await rapi.get("/api/v1/export/audit-pack/2026/9", headers=beta.h)).status_code == 403

    r = await rapi.get("/api/v1/receipts", headers=acme.h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pagination"]["total_items"] == 1
    item = body["receipts"][0]
    assert item["serial_number"] == "CL-202609-00001"
    assert item["period_start"] == "2026-09-01" and item["period_end"] == "2026-09-30"
    assert item["verification_url"].endswith("/public/receipts/verify/CL-202609-00001")
    assert (await rapi.get("/api/v1/receipts?start_date=2026-10-01", headers=acme.h)).json()["receipts"] == []

    pdf = await rapi.get(item["pdf_url"], headers=acme.h)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    assert (await rapi.get(item["pdf_url"], headers=beta.h)).status_code == 404  # another org's receipt
    assert (await rapi.get("/api/v1/receipts/nope/pdf", headers=acme.h)).status_code == 404

    pack = await rapi.get("/api/v1/export/audit-pack/2026/9", headers=acme.h)
    assert pack.status_code == 200 and pack.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(pack.content))
    assert zf.read("receipts/CL-202609-00001.pdf") == pdf.content
    manifest = json.loads(zf.read("manifest.json"))
    assert {f["path"] for f in manifest["payload"]["files"]} | {"manifest.json"} == set(zf.namelist())
    assert (await rapi.get("/api/v1/export/audit-pack/2026/8", headers=acme.h)).status_code == 404
    assert (await rapi.get("/api/v1/export/audit-pack/2026/13", headers=acme.h)).status_code == 422
    assert (await rapi.get("/api/v1/export/audit-pack/2026/9")).status_code == 401


async def test_public_verification_and_rate_limit(rapi, closed):
    r = await rapi.get("/public/receipts/verify/CL-202609-00001")  # no auth
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verified"] is True
    assert body["serial_number"] == "CL-202609-00001"
    assert {"payload_hash", "signature", "public_key", "key_version", "verification_instructions"} <= set(
        body
    )
    assert not {"org_id", "org", "org_name", "id"} & set(body)  # no org data on the public endpoint
    payload = {
        k: body[k]
        for k in ("serial_number", "co2_retired_kg", "credit_serial_numbers", "period_start", "period_end")
    }
    assert verify_independently(payload, body["payload_hash"], body["signature"], body["public_key"])
    assert not verify_independently(
        {**payload, "co2_retired_kg": 0.001}, body["payload_hash"], body["signature"], body["public_key"]
    )

    r = await rapi.get("/public/receipts/verify/CL-202609-99999")
    assert (
        r.status_code == 404 and r.json()["detail"] == "No receipt found with serial number CL-202609-99999."
    )
    statuses = [(await rapi.get("/public/receipts/verify/CL-202609-00001")).status_code for _ in range(60)]
    assert statuses[:58] == [200] * 58  # 2 requests were made above: 60 per minute per IP
    assert statuses[58:] == [429, 429]
    last = await rapi.get("/public/receipts/verify/CL-202609-00001")
    assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1


async def test_billing_status_lists_closed_periods(rapi, closed):
    acme, _ = closed
    body = (await rapi.get("/api/v1/billing/status", headers=acme.h)).json()
    sep = [p for p in body["past_periods"] if p["period_start"] == "2026-09-01"][0]
    assert sep["status"] == "closed" and sep["receipt_serial"] == "CL-202609-00001"
    assert sep["credits_retired"] >= sep["total_co2_upper_bound_kg"] > sep["total_co2_kg"] > 0
