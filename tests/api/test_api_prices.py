"""/api/v1/price-overrides: an org's custom prices (read to list, admin to change; 422 on bad bodies)."""

from __future__ import annotations

import pytest

from tests.fixtures_api import bearer

pytestmark = pytest.mark.anyio

PO = "/api/v1/price-overrides"
BODY = {"model_pattern": "GPT-4o*", "input": 2.0, "cached_input": 0.5, "cache_write": 2.0, "output": 8.0}


async def test_put_list_get_replace_delete(api, tenants):
    a, b = tenants
    r = await api.put(PO, json={**BODY, "note": "enterprise agreement"}, headers=bearer(a.admin))
    assert r.status_code == 201, r.text
    o = r.json()
    assert o["model_pattern"] == "gpt-4o*" and o["provider"] is None and o["note"] == "enterprise agreement"
    assert o["price_source"] == f"org override {o['id']}: gpt-4o*"
    r = await api.put(PO, json={**BODY, "output": 7.5}, headers=bearer(a.admin))
    assert r.status_code == 200 and r.json()["id"] == o["id"] and r.json()["output"] == 7.5
    r = await api.put(PO, json={**BODY, "provider": "azure"}, headers=bearer(a.admin))
    assert r.status_code == 201 and r.json()["price_source"].endswith(": azure/gpt-4o*")

    listed = (await api.get(PO, headers=bearer(a.read))).json()["price_overrides"]
    assert [(x["provider"], x["output"]) for x in listed] == [(None, 7.5), ("azure", 8.0)]
    assert (await api.get(PO, headers=bearer(b.read))).json() == {"price_overrides": []}
    got = await api.get(f"{PO}/{o['id']}", headers=bearer(a.read))
    assert got.status_code == 200 and got.json()["output"] == 7.5
    for h in (bearer(b.rw), bearer(b.read)):  # another org's id: 404, never data
        assert (await api.get(f"{PO}/{o['id']}", headers=h)).status_code == 404
    assert (await api.delete(f"{PO}/{o['id']}", headers=bearer(b.rw))).status_code == 404
    assert (await api.delete(f"{PO}/{o['id']}", headers=bearer(a.admin))).status_code == 204
    r = await api.get(f"{PO}/{o['id']}", headers=bearer(a.read))
    assert r.status_code == 404 and r.json() == {"detail": "price override not found"}


async def test_scopes(api, tenants):
    a, _ = tenants
    assert (await api.get(PO)).status_code == 401
    assert (await api.put(PO, json=BODY, headers=bearer(a.read))).status_code == 403
    assert (await api.get(PO, headers=bearer(a.ingest))).status_code == 403
    assert (await api.get(PO, headers=bearer(a.admin))).status_code == 403  # admin only: no read scope


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"model_pattern": ""}, "model_pattern"),
        ({"model_pattern": "gpt 4o"}, "model_pattern"),
        ({"provider": "open ai"}, "provider"),
        ({"input": -1}, "input"),
        ({"output": "NaN"}, "output"),
        ({"cached_input": 1e7}, "cached_input"),
        ({"cache_write": None}, "cache_write"),
        ({"surprise": 1}, "surprise"),
        ({"note": "n" * 501}, "note"),
    ],
)
async def test_bad_bodies_are_422_with_the_field(api, tenants, change, loc):
    a, _ = tenants
    r = await api.put(PO, json={**BODY, **change}, headers=a.h)
    assert r.status_code == 422, r.text
    assert loc in {str(e["loc"][-1]) for e in r.json()["detail"]}
    assert (await api.get(PO, headers=a.h)).json() == {"price_overrides": []}
    missing = {k: v for k, v in BODY.items() if k != "output"}
    assert (await api.put(PO, json=missing, headers=a.h)).status_code == 422
