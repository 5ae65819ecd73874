"""One dashboard for the browser tests (module scope: one pipeline run, one server, one browser).

Simulated traffic (duplicates, revisions, invalid messages) → Tansu → a real worker process (enrich, sink) →
chdb; then the API over that warehouse with the gateway mounted beside it (as `joulestream up` serves them),
on uvicorn on loopback, and a real gateway request to the demo upstream so that there is a real signed receipt.
The browser is Debian's chromium driven by Playwright (no Playwright browser download)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import REPO, WorkerProcess, free_port, new_stack, publish

ARTIFACTS = REPO / "tests" / "artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str:
    """Debian's chromium; installed here when missing and we are root (as `make test` does), else a skip."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            "chromium is not installed and cannot be installed here (not root): `apt-get install chromium`"
        )
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True, timeout=900
    )
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


@dataclass
class Dashboard:
    url: str
    engine: Any
    org_id: str
    key: str  # read + admin + billing (the dashboard's user)
    read_key: str  # read only
    gateway_key: str  # ingest + read
    receipt_id: str

    def api(self, path: str, key: str | None = None, **params: Any) -> Any:
        r = httpx.get(
            f"{self.url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=60,
        )
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def dashboard(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    from api.app import create_app
    from cli.demo_gateway import DemoUpstream
    from cli.embedded import _mount_gateway
    from controlplane import ApiKeys, Orgs, Projects, get_engine, upgrade
    from pipelines.simulate import generate
    from tests.e2e.test_pipeline import wait_done
    from tests.gateway.conftest import ServerThread
    from warehouse.client import close_clients, get_client

    if not (REPO / "api" / "dashboard" / "static" / "vendor" / "uPlot.iife.min.js").exists():
        subprocess.run(["make", "dashboard"], cwd=REPO, check=True, capture_output=True, timeout=300)
    tmp = tmp_path_factory.mktemp("dashboard")
    stack = new_stack(kafka, tmp, JOULESTREAM_KPI_REFRESH_S="0")
    settings = stack.settings
    (settings.home / "logs").mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.database)
    upgrade(engine)
    orgs, keys, projects = Orgs(engine), ApiKeys(engine), Projects(engine)
    a = orgs.create("acme", name="Acme Inference", plan_tier="growth")
    b = orgs.create("beta")
    a_projects = [projects.create(a.id, f"A{i}").id for i in range(2)]
    b_projects = [projects.create(b.id, "B0").id]
    traffic = generate(2000, days=10, now=datetime.now(UTC), seed=5,
                       tenants={a.id: a_projects, b.id: b_projects})  # fmt: skip
    worker = WorkerProcess(stack, tmp / "worker.log")
    upstream = server = client = None
    try:
        worker.start()
        assert publish(stack, traffic.messages) == 2000
        wait_done(worker, 2000, len(traffic.final))
        assert worker.stop() == 0, worker.log_tail()
        close_clients()  # one chdb path per process: let go of the test session's warehouse first
        client = get_client(settings)  # the worker is gone: open its chdb here
        app = create_app(settings, engine=engine, warehouse_client_factory=lambda: client)
        upstream = DemoUpstream(free_port(), settings.home)
        _mount_gateway(app, settings, engine, upstream.start())
        server = ServerThread(app).start()
        gw_key = keys.create(a.id, ["ingest", "read"], name="gateway")[1]
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": "auto",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
            },
            headers={"Authorization": f"Bearer {gw_key}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        receipt_id = r.headers["X-Receipt-Id"]
        board = Dashboard(
            url=server.url,
            engine=engine,
            org_id=a.id,
            key=keys.create(a.id, ["read", "admin", "billing"], name="dashboard user")[1],
            read_key=keys.create(a.id, ["read"], name="reader")[1],
            gateway_key=gw_key,
            receipt_id=receipt_id,
        )
        _wait_receipt(board)
        yield board
    finally:
        if server is not None:
            server.stop()
        if upstream is not None:
            upstream.stop()
        worker.stop()
        if client is not None:
            close_clients()


def _wait_receipt(board: Dashboard, timeout_s: float = 15) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.get(
            f"{board.url}/v1/receipts/{board.receipt_id}",
            headers={"Authorization": f"Bearer {board.gateway_key}"},
            timeout=10,
        )
        if r.status_code == 200:
            return
        assert time.monotonic() < deadline, f"receipt {board.receipt_id} not stored: {r.text}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def browser(dashboard: Dashboard) -> Iterator[Any]:
    exe = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"], headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, dashboard: Dashboard) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=dashboard.url)
    ctx.set_default_timeout(20_000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def sign_in(page: Any, key: str) -> None:
    """Sign in through the form; lands on the overview."""
    page.goto("/")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#key", key)
    page.press("#key", "Enter")
    page.wait_for_selector("#nav:not([hidden])")
    wait_page(page, "overview")


def open_page(page: Any, name: str) -> None:
    page.click(f"nav a[href='#/{name}']")
    wait_page(page, name)


def wait_page(page: Any, name: str) -> None:
    page.wait_for_selector(f"#page > div[data-page='{name}'][data-loading='0']")
