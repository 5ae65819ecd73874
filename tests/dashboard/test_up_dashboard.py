"""`joulestream up --dagster` as `make run` starts it: the printed one-time sign-in link opens the demo org's
dashboard with data (in the real browser), and the printed Dagster UI answers and shows the monthly close job
(over its GraphQL API); stopping `up` stops Dagster too."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.cli.test_processes import descendants, master_key, reap, spawn, wait_gone, wait_until  # noqa: F401
from tests.dashboard.conftest import chromium_path
from tests.stack import free_port

pytestmark = pytest.mark.slow

LINK = re.compile(r"(http://127\.0\.0\.1:\d+/app/#signin=[A-Za-z0-9_-]{20,100})")
DAGSTER = re.compile(r"Dagster UI\s+(http://127\.0\.0\.1:\d+)")


def _jobs(url: str) -> set[str]:
    body = httpx.post(
        f"{url}/graphql",
        json={"query": "{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }"},
        timeout=10,
    ).json()
    nodes = (body.get("data") or {}).get("repositoriesOrError", {}).get("nodes") or []
    return {j["name"] for n in nodes for j in n["jobs"]}


def test_up_prints_a_sign_in_link_and_runs_dagster_beside_the_stack(stack, tmp_path, reap) -> None:  # noqa: F811
    if not (Path(sys.executable).parent / "dagster").exists():
        pytest.fail("the dagster CLI is a dependency of joulestream: it must be in the venv")
    exe = chromium_path()
    http_port = free_port()
    env = {**stack.env, "JOULESTREAM_MASTER_KEY": master_key(), "COLUMNS": "100"}
    log = tmp_path / "up.out"
    args = ["up", "--events", "300", "--rate", "2", "--http-port", str(http_port),
            "--upstream-port", str(free_port()), "--dagster", "--dagster-port", str(free_port())]  # fmt: skip
    proc = spawn(args, env, log)
    reap.append(proc)
    link = wait_until(lambda: LINK.search(log.read_text()), proc, log, what="the sign-in link").group(1)
    dagster_url = DAGSTER.search(log.read_text()).group(1)
    assert "not started" not in dagster_url
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=2).status_code, proc, log)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)  # "with data within a minute"
            page.goto(link)
            page.wait_for_selector("#page > div[data-page='overview'][data-loading='0']")
            assert "demo" in page.inner_text("#org")
            assert page.is_visible("#dagster") and page.get_attribute("#dagster", "href") == dagster_url
            for _ in range(60):  # the simulated burst lands within seconds; reload until the tiles show it
                value = page.locator(".tile[data-figure='co2e_grams']").get_attribute("data-value")
                if value and float(value) > 0:
                    break
                page.wait_for_timeout(1000)
                page.reload()
                page.wait_for_selector("#page > div[data-page='overview'][data-loading='0']")
            assert float(value) > 0
            page.wait_for_selector("figure.chart[data-drawn='1']")
        finally:
            browser.close()

    jobs = wait_until(lambda: _jobs(dagster_url), proc, log, timeout_s=120, what="the Dagster UI")
    assert "monthly_close" in jobs
    family = descendants(proc.pid)
    assert any(b"dagster" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in family)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, log.read_text()[-3000:]
    assert wait_gone(family, 30) == []
