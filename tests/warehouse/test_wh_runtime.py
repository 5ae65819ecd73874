"""warehouse/runtime.py: the runtime.json address book, the one open-or-ask order, the runtime token; and
`joulestream totals`, which reads the same figures either way and shows only the keys it groups by."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from api.internal import internal_router
from cli.main import app as cli_app
from core.settings import load_settings
from tests.orchestration.helpers import pipeline_usage
from warehouse.aio import AsyncWarehouse
from warehouse.runtime import (
    TOKEN_HEADER,
    RuntimeInfo,
    WarehouseUnreachable,
    clear_runtime,
    find_runtime,
    open_or_ask,
    publish_runtime,
)


@pytest.fixture
def filled(warehouse, tmp_path, monkeypatch):
    """The test's warehouse database with pipeline-made usage, and settings (and environment) pointing at it."""
    client, database = warehouse
    pipeline_usage(client, ["org-a", "org-b"], datetime(2026, 9, 1, tzinfo=UTC), 40)
    monkeypatch.setenv("JOULESTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JOULESTREAM_CH_DATABASE", database)
    monkeypatch.setenv("COLUMNS", "200")
    return client, load_settings()


@pytest.fixture
def runtime(filled):
    """A loopback server with the internal router over the warehouse, recorded in runtime.json."""
    client, settings = filled
    aw = AsyncWarehouse(client)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = publish_runtime(settings, f"http://127.0.0.1:{port}")
    api = FastAPI()
    api.include_router(internal_router(info.token, lambda: aw, lambda: {"ok": True}))
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield info
    server.should_exit = True
    thread.join(5)
    clear_runtime(settings, info)
    aw.close()


def _totals(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli_app, ["totals", *args])
    return r.exit_code, r.output


def test_open_or_ask_asks_a_live_runtime_first(filled, runtime):
    client, settings = filled
    assert find_runtime(settings) == runtime
    assert open_or_ask(settings) == runtime
    assert open_or_ask(settings, mode="runtime") == runtime
    assert open_or_ask(settings, mode="direct") is client
    clear_runtime(settings, runtime)
    assert find_runtime(settings) is None
    assert open_or_ask(settings) is client
    with pytest.raises(WarehouseUnreachable, match="no live runtime.json"):
        open_or_ask(settings, mode="runtime")


def test_dead_runtime_is_ignored(filled):
    client, settings = filled
    dead = RuntimeInfo(pid=2**22 + 7, url="http://127.0.0.1:1", token="t", started_at=datetime.now(UTC))
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "runtime.json").write_text(dead.model_dump_json())
    assert find_runtime(settings) is None
    assert open_or_ask(settings) is client


def test_internal_endpoints_need_the_token(runtime):
    assert httpx.get(f"{runtime.url}/internal/v1/stats").status_code == 401
    assert httpx.get(f"{runtime.url}/internal/v1/stats", headers={TOKEN_HEADER: "wrong"}).status_code == 401
    r = httpx.get(f"{runtime.url}/internal/v1/stats", headers={TOKEN_HEADER: runtime.token})
    assert r.status_code == 200 and r.json() == {"ok": True}


@pytest.mark.parametrize(
    "by, keys", [("model", ["provider", "model"]), ("project", ["org_id", "project_id"])]
)
def test_totals_shows_only_the_grouped_keys(filled, by, keys):
    code, out = _totals("--by", by, "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["rows"] and all(list(r)[-len(keys) :] == keys for r in data["rows"])
    assert all(None not in r.values() for r in data["rows"])
    code, out = _totals("--by", by)
    assert code == 0, out
    header = next(line for line in out.splitlines() if "events" in line and "co2_kg" in line)
    for col in ("org_id", "project_id", "provider", "model", "day"):
        assert (col in header) == (col in keys), (col, header)
    assert "None" not in out


def test_totals_read_here_and_through_the_runtime_agree(filled, runtime):
    through_runtime = _totals("--by", "model", "--json")
    clear_runtime(filled[1], runtime)
    direct = _totals("--by", "model", "--json")
    assert through_runtime[0] == direct[0] == 0
    assert json.loads(through_runtime[1]) == json.loads(direct[1])
    assert json.loads(direct[1])["totals"]["events"] == 40
