"""GPU targets through the API (admin to change, read to list; another org's ids are 404; bad bodies are 422
with field errors, never a 5xx) and GET /calibration's window validation."""

from __future__ import annotations

import pytest

from tests.fixtures_api import client_for

BODY = {
    "name": "h100 node 1",
    "dcgm_url": "http://10.0.0.5:9400/metrics",
    "server_urls": ["http://10.0.0.5:8000/metrics"],
    "gpus": ["GPU-a1c2e3f4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", "1"],
    "provider": "aws",
    "region": "us-east-1",
}


@pytest.mark.anyio
async def test_targets_crud_scopes_and_tenancy(make_app, tenants) -> None:
    a, b = tenants
    async with client_for(make_app()) as c:
        url = "/api/v1/gpu-targets"
        assert (
            await c.post(url, json=BODY, headers={"Authorization": f"Bearer {a.read}"})
        ).status_code == 403
        r = await c.post(url, json=BODY, headers=a.h)
        assert r.status_code == 201, r.text
        t = r.json()
        assert t["server_urls"] == BODY["server_urls"] and t["gpus"] == BODY["gpus"] and t["project_id"]
        got = await c.get(f"{url}/{t['id']}", headers={"Authorization": f"Bearer {a.read}"})
        assert got.status_code == 200 and got.json()["id"] == t["id"]
        assert (await c.get(f"{url}/{t['id']}", headers=b.h)).status_code == 404
        assert (await c.get(url, headers=b.h)).json()["data"] == []
        assert [x["id"] for x in (await c.get(url, headers=a.h)).json()["data"]] == [t["id"]]
        assert (await c.delete(f"{url}/{t['id']}", headers=b.h)).status_code == 404
        assert (await c.delete(f"{url}/{t['id']}", headers=a.h)).status_code == 204
        assert (await c.get(url, headers=a.h)).json()["data"] == []
        assert (await c.delete(f"{url}/{t['id']}", headers=a.h)).status_code == 404

        assert (await c.post(url, json={**BODY, "project_id": "nope"}, headers=a.h)).status_code == 404
        for bad in (
            {**BODY, "server_urls": []},
            {**BODY, "dcgm_url": "file:///etc/passwd"},
            {**BODY, "prometheus_url": "http://prom:9090"},
            {**BODY, "dcgm_url": "http://user:secret@10.0.0.5:9400/metrics"},
            {**BODY, "provider": ""},
            {**BODY, "extra": 1},
        ):
            r = await c.post(url, json=bad, headers=a.h)
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["detail"] and "secret" not in r.text  # no input echoed


@pytest.mark.anyio
async def test_calibration_validates_the_window(make_app, tenants) -> None:
    a, _ = tenants
    async with client_for(make_app()) as c:
        r = await c.get("/api/v1/calibration", params={"last": "7d"}, headers=a.h)
        assert r.status_code == 200 and r.json()["data"] == []  # no warehouse wired: empty
        r = await c.get("/api/v1/calibration", params={"last": "forever"}, headers=a.h)
        assert r.status_code == 422 and r.json()["detail"]
        assert (await c.get("/api/v1/calibration")).status_code == 401
