"""The dashboard in a real headless browser (Debian's chromium, Playwright) over data the real pipeline produced
(tests/dashboard/conftest.py): sign-in (form and one-time link), the KPI tiles against /metrics/summary, the
stacked chart, applying / ignoring / restoring a recommendation, the receipt verifier on a real and a tampered
receipt, readable errors, keyboard use, and screenshots of every page at 1280 and 390 px (tests/artifacts/)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest

from controlplane import ApiKeys
from controlplane.signin_links import SignInLinks
from tests.dashboard.conftest import ARTIFACTS, Dashboard, open_page, sign_in, wait_page

# One worker runs the whole module in a row (make test: --dist loadgroup): its module-scoped fixture holds the
# pipeline's chdb path, and a process can hold only one — another module's test in between would need its own.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dashboard-browser")]

PAGES = ("overview", "breakdown", "recommendations", "sustainability", "gateway", "receipts", "exports",
         "connections", "methodology")  # fmt: skip
TILES = ("energy_kwh", "co2e_grams", "co2e_market_grams", "embodied_co2e_grams", "water_ml", "total_cost")


def _number(text: str) -> float:
    """A tile's displayed value ("1,234 kWh", "2.35M g", "0.1234 USD") as a number."""
    m = re.match(r"^(-?[\d,]*\.?\d+(?:e[-+]?\d+)?)(M?)(?:\s|$)", text.strip())
    assert m, text
    return float(m.group(1).replace(",", "")) * (1e6 if m.group(2) else 1)


def test_a_wrong_or_revoked_key_shows_a_readable_error(page, dashboard: Dashboard) -> None:
    page.goto("/")
    assert page.url.endswith("/app/")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#key", "js_live_this-is-not-a-key-of-anyone-at-all-000000000")
    page.press("#key", "Enter")
    err = page.wait_for_selector("#error:not([hidden])")
    assert "wrong, revoked or expired (HTTP 401)" in err.inner_text()
    assert page.is_visible("#signin") and not page.is_visible("#nav")
    assert page.evaluate("sessionStorage.length") == 0
    keys = ApiKeys(dashboard.engine)
    key, plaintext = keys.create(dashboard.org_id, ["read"], name="soon revoked")
    sign_in(page, plaintext)
    keys.revoke(key.id)
    page.click(
        "nav a[href='#/breakdown']"
    )  # the next API call answers 401: back to the sign-in form, with the reason
    err = page.wait_for_selector("#error:not([hidden])")
    assert "HTTP 401" in err.inner_text() and "sign in again" in err.inner_text()
    assert page.is_visible("#signin") and page.evaluate("sessionStorage.length") == 0


def test_a_sign_in_link_opens_the_dashboard_once(page, browser, dashboard: Dashboard) -> None:
    token = SignInLinks(dashboard.engine).create(dashboard.org_id, ("read", "admin"), timedelta(minutes=5))
    page.goto(f"/app/#signin={token}")
    wait_page(page, "overview")
    assert token not in page.url and token not in page.evaluate("location.href")
    assert "acme" in page.inner_text("#org")
    cred = page.evaluate("sessionStorage.getItem('joulestream.credential')")
    assert cred.startswith("js_live_") and cred not in page.url
    page.click("#signout")  # revokes the session key the link opened
    page.wait_for_selector("#signin:not([hidden])")
    assert (
        httpx.get(
            f"{dashboard.url}/api/v1/metrics/summary", headers={"Authorization": f"Bearer {cred}"}
        ).status_code
        == 401
    )
    other = browser.new_context(base_url=dashboard.url).new_page()  # the link again, elsewhere: refused
    other.goto(f"/app/#signin={token}")
    err = other.wait_for_selector("#error:not([hidden])")
    assert "already used or expired" in err.inner_text() and other.is_visible("#signin")
    other.context.close()


def test_kpi_tiles_equal_the_summary_and_the_chart_draws_every_series(page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard.key)
    summary = dashboard.api("/api/v1/metrics/summary", last="30d")
    assert summary["events"] > 100
    for field in TILES:
        tile = page.locator(f".tile[data-figure='{field}']")
        assert float(tile.get_attribute("data-value")) == pytest.approx(summary[field], rel=1e-12)
        shown = _number(tile.locator(".value").inner_text())
        assert shown == pytest.approx(summary[field], rel=1e-3, abs=1e-9), field  # 4 significant digits
        if field != "total_cost":  # cost has no uncertainty band
            assert "low–high" in tile.locator(".band").inner_text()
        assert "measured" in tile.locator(".share").inner_text()
    ts = dashboard.api("/api/v1/metrics/timeseries", last="30d", group_by="model", fields="co2e_grams")
    n = len(ts["series"])
    assert n >= 3
    fig = page.wait_for_selector("figure.chart[data-drawn='1']")
    assert fig.get_attribute("data-series") == str(n)
    assert page.evaluate("[...Charts.live][0].series.length") == n + 3  # x, one per model, the low/high band
    painted = page.evaluate(
        """() => { const c = document.querySelector('#chart canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n / (c.width * c.height); }"""
    )
    assert painted > 0.05, f"chart canvas nearly blank ({painted:.3f} painted)"
    caption = page.inner_text("figure.chart figcaption")  # the text equivalent: totals and series
    assert f"{n} series" in caption
    page.click("figure.chart summary")
    rows = page.locator("figure.chart details tbody tr").count()
    assert rows == len(ts["series"][0]["points"])
    page.select_option("select[name='last']", "7d")  # the window picker redraws
    wait_page(page, "overview")
    week = dashboard.api("/api/v1/metrics/summary", last="7d")
    shown = float(page.locator(".tile[data-figure='co2e_grams']").get_attribute("data-value"))
    assert shown == pytest.approx(week["co2e_grams"], rel=1e-12)


def test_applying_ignoring_and_restoring_a_recommendation(page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard.key)
    open_page(page, "recommendations")
    active = page.locator("#recs-active tbody tr")
    assert active.count() >= 2
    first, second = (active.nth(i).get_attribute("data-rec-id") for i in (0, 1))
    page.locator(f"tr[data-rec-id='{first}'] button", has_text="Apply").click()
    page.wait_for_selector(f"#recs-applied tr[data-rec-id='{first}'][data-status='applied']")
    applied = dashboard.api("/api/v1/recommendations/applied")["recommendations"]
    assert first in {r["id"] for r in applied}
    claimed = page.locator(f"#recs-applied tr[data-rec-id='{first}'] td").nth(2).inner_text()
    rec = next(r for r in applied if r["id"] == first)
    assert _number(claimed) == pytest.approx(rec["potential_savings_co2e_grams"] / 1000, rel=1e-3)
    assert page.locator(f"#recs-applied tr[data-rec-id='{first}'] td.measured").count() == 1
    page.locator(f"tr[data-rec-id='{second}'] button", has_text="Ignore").click()
    page.wait_for_selector(f"#recs-ignored tr[data-rec-id='{second}']")
    assert second in {r["id"] for r in dashboard.api("/api/v1/recommendations/ignored")["recommendations"]}
    page.locator(f"#recs-ignored tr[data-rec-id='{second}'] button", has_text="Restore").click()
    page.wait_for_selector(f"#recs-active tr[data-rec-id='{second}']")
    assert second not in {
        r["id"] for r in dashboard.api("/api/v1/recommendations/ignored")["recommendations"]
    }


def test_a_read_only_key_gets_a_readable_403(page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard.read_key)
    open_page(page, "recommendations")
    rec = page.locator("#recs-active tbody tr").first.get_attribute("data-rec-id")
    page.locator(f"tr[data-rec-id='{rec}'] button", has_text="Ignore").click()
    err = page.wait_for_selector("#error:not([hidden])")
    assert "Not allowed for this key (HTTP 403): missing scope: admin" in err.inner_text()
    assert page.is_visible("#nav")  # still signed in


def test_the_receipt_verifier_accepts_a_real_receipt_and_rejects_a_tampered_one(
    page, dashboard: Dashboard
) -> None:
    sign_in(page, dashboard.key)
    open_page(page, "gateway")
    assert (
        page.locator("#by-tier tbody tr").count() >= 1 and page.locator("#by-upstream tbody tr").count() >= 1
    )
    page.fill("#receipt-id", dashboard.receipt_id)
    page.press("#receipt-id", "Enter")
    verdict = page.wait_for_selector("#verdict .verdict")
    assert verdict.inner_text().startswith("valid: signature verified"), verdict.inner_text()
    record = json.loads(page.input_value("#receipt-json"))
    record["payload"]["co2e_grams"] = (
        record["payload"].get("co2e_grams") or 0
    ) / 2 + 1  # a smaller footprint
    page.fill("#receipt-json", json.dumps(record))
    page.click("#verify")
    page.wait_for_selector("#verdict .verdict.invalid")
    assert "invalid: the payload does not match its SHA-256" in page.inner_text("#verdict")
    record = json.loads(page.input_value("#receipt-json"))
    forged = dict(record)
    forged["sha256"] = page.evaluate(  # a forger who recomputes the hash still lacks the key
        """async (p) => { const b = new TextEncoder().encode(Receipts.canonical(p));
        return [...new Uint8Array(await crypto.subtle.digest('SHA-256', b))].map(x => x.toString(16).padStart(2, '0')).join(''); }""",
        record["payload"],
    )
    page.fill("#receipt-json", json.dumps(forged))
    page.click("#verify")
    page.wait_for_selector("#verdict .verdict.invalid")
    assert "invalid: the Ed25519 signature does not verify" in page.inner_text("#verdict")


def test_keyboard_only_navigation(page, dashboard: Dashboard) -> None:
    page.goto("/")
    page.wait_for_selector("body[data-ready='1']")
    assert page.evaluate("document.activeElement.id") == "key"  # focus starts in the key field
    page.keyboard.type(dashboard.key)
    page.keyboard.press("Enter")
    wait_page(page, "overview")
    for _ in range(30):  # Tab to the Breakdown link and follow it with Enter
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == "#/breakdown":
            break
    page.keyboard.press("Enter")
    wait_page(page, "breakdown")
    header = page.locator("#by-project th button", has_text="CO2e (g)")
    header.focus()
    page.keyboard.press("Enter")  # sortable by keyboard
    assert page.locator("#by-project th[data-key='co2e_grams']").get_attribute("aria-sort") == "descending"


@pytest.mark.parametrize("width", [1280, 390])
def test_every_page_renders_at_both_widths_with_screenshots(
    browser, dashboard: Dashboard, width: int
) -> None:
    ctx = browser.new_context(viewport={"width": width, "height": 900}, base_url=dashboard.url)
    ctx.set_default_timeout(20_000)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        sign_in(page, dashboard.key)
        for name in PAGES:
            if name != "overview":
                open_page(page, name)
            if name == "overview":
                page.wait_for_selector("figure.chart[data-drawn='1']")
            assert not page.is_visible("#error"), f"{name}: {page.inner_text('#error')}"
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{name} at {width}px scrolls sideways by {overflow}px"
            page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
    finally:
        ctx.close()
    assert not errors, errors


def test_measure_page_weight_and_time_to_first_chart(browser, dashboard: Dashboard) -> None:
    """Not a timing assert: writes the figures (KB on first load, ms to the first chart) as an artefact."""
    token = SignInLinks(dashboard.engine).create(dashboard.org_id, ("read",), timedelta(minutes=5))
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=dashboard.url)
    page = ctx.new_page()
    sent: list[Any] = []
    page.on("requestfinished", lambda r: sent.append(r))
    page.goto(f"/app/#signin={token}")
    page.wait_for_selector("figure.chart[data-drawn='1']")
    first_chart_ms = page.evaluate("window.__firstChartAt")
    static = sum(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"] for r in sent
                 if "/app/" in r.url)  # fmt: skip
    total = sum(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"] for r in sent)
    ctx.close()
    out = {"first_load_kb_static": round(static / 1024, 1), "first_load_kb_total": round(total / 1024, 1),
           "requests": len(sent), "time_to_first_chart_ms": round(first_chart_ms)}  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "measurements.json").write_text(json.dumps(out, indent=2))
    print("dashboard first load:", out)
    assert static > 0 and first_chart_ms > 0
