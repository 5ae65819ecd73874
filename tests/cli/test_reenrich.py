"""`joulestream reenrich`: the ledger rows of open periods recomputed with another factor version, exactly.

Two months of simulated traffic (duplicates and provider revisions included) are enriched with v1.0 and
stored by the ledger writer, as the pipeline stores them; October is closed for one org. The command (run
in this process, on the test's warehouse) must refuse to touch October and change nothing, then re-enrich
November so that every total equals the figures computed straight from the final events with v2.0 (and an
org's price override), leave October at v1.0, write nothing when run again, and keep a stale re-send of an
old revision from changing any total.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from cli.main import app
from controlplane import Orgs, Projects
from controlplane.billing import BillingPeriods
from controlplane.prices import PriceLookup, PriceOverrides, as_prices
from core.contracts import UsageEvent
from core.methodology import enrich, load_factor_set
from pipelines.simulate import generate
from tests.stack import publish
from warehouse.ledger import write_enriched

TOKENS = ("input_tokens_uncached", "input_tokens_cached", "input_tokens_cache_creation", "output_tokens")
FIGURES = (
    "energy_j",
    "energy_j_low",
    "energy_j_high",
    "co2_kg",
    "co2_kg_low",
    "co2_kg_high",
    "co2_kg_market",
    "co2_kg_embodied",
    "water_l",
    "cost_usd",
)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def db_url(request, tmp_path):  # SQLite is enough here: the periods' rules are tested on both elsewhere
    url = f"sqlite:///{tmp_path / 'control.db'}"
    yield url
    from controlplane import dispose_engine

    dispose_engine(url)


def _stored(client, table: str = "usage_events") -> dict[tuple[str, str], dict[str, float]]:
    """(org, month) → sums of the ledger (sign × value) or of the daily rollup."""
    cols = [c for c in (*TOKENS, *FIGURES) if c in _columns(client, table)]
    if table == "usage_events":
        sums = ", ".join(f"sum(sign * ifNull({c}, 0)) AS {c}" for c in cols)
        key, events = "formatDateTime(bucket_start, '%Y-%m')", "sum(sign)"
    else:
        sums = ", ".join(f"sum(ifNull({c}, 0)) AS {c}" for c in cols)
        key, events = "formatDateTime(day, '%Y-%m')", "sum(events)"
    rows = client.query(
        f"SELECT org_id, {key} AS m, {events} AS events, {sums} FROM {table} GROUP BY org_id, m"
    ).named_results()
    return {(r.pop("org_id"), r.pop("m")): r for r in rows}


def _columns(client, table: str) -> set[str]:
    return {r[0] for r in client.query(f"DESCRIBE TABLE {table}").result_rows}


def _expected(events: list[UsageEvent], version: str, prices) -> dict[tuple[str, str], dict[str, float]]:
    fs = load_factor_set(version)
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in events:
        p = prices(e.org_id, e.provider, e.model) if prices else None
        en = enrich(e, fs, NOW, prices=p)
        row = out[(e.org_id, e.bucket_start.strftime("%Y-%m"))]
        row["events"] += 1
        for f in (*TOKENS, *FIGURES):
            row[f] += getattr(en, f) or 0
    return out


def _assert_equal(got, want, where: str) -> None:
    assert set(got) == set(want), where
    for key, w in want.items():
        g = got[key]
        for f, v in w.items():
            if f not in g:
                continue  # a figure the warehouse does not store
            if f in ("events", *TOKENS):
                assert g[f] == v, f"{where} {key} {f}: {g[f]} != {v}"
            else:
                assert math.isclose(g[f], v, rel_tol=1e-9, abs_tol=1e-12), f"{where} {key} {f}: {g[f]} != {v}"


def test_reenrich_open_periods_exactly_and_refuse_closed(warehouse, engine, tmp_path, monkeypatch):
    client, database = warehouse
    for table in ("usage_events", "usage_daily"):  # every figure is checked, in the ledger and the rollup
        assert set(FIGURES) <= _columns(client, table), table
    orgs = [Orgs(engine).create(slug) for slug in ("acme", "beta")]
    tenants = {o.id: [Projects(engine).ensure_default_project(o.id).id] for o in orgs}
    acme, beta = orgs
    traffic = generate(3_000, days=61, now=NOW, tenants=tenants, invalid_rate=0)
    v1 = load_factor_set("v1.0")
    batch = []
    for rec in traffic.messages:  # in publication order, as the pipeline sees them
        batch.append(enrich(UsageEvent.model_validate_json(rec.value), v1, NOW))
        if len(batch) == 500:
            write_enriched(client, batch)
            batch = []
    write_enriched(client, batch)
    final = list(traffic.final.values())
    assert {e.bucket_start.strftime("%Y-%m") for e in final} == {"2026-10", "2026-11"}
    assert traffic.revisions > 0

    periods = BillingPeriods(engine)
    october = periods.ensure(acme.id, "2026-10")
    periods.begin_close(october.id, datetime(2026, 11, 2, tzinfo=UTC))
    periods.mark_closed(october.id, None)
    PriceOverrides(engine).put(
        beta.id, "*", input=1.0, cached_input=0.25, cache_write=1.5, output=4.0, note="a flat contract"
    )
    before = _stored(client)
    _assert_equal(before, _expected(final, "v1.0", None), "before")

    monkeypatch.setenv("JOULESTREAM_HOME", str(tmp_path / "home"))  # no runtime.json: the warehouse here
    monkeypatch.setenv("JOULESTREAM_DATABASE", str(engine.url))
    monkeypatch.setenv("JOULESTREAM_CH_DATABASE", database)
    runner = CliRunner(env={"COLUMNS": "300"})

    # 1. reaching into acme's closed October: refused, nothing touched
    r = runner.invoke(app, ["reenrich", "--factors", "v2.0", "--since", "2026-10-01"])
    assert r.exit_code == 2, r.output
    assert "refusing" in r.output and f"org {acme.id} 2026-10" in r.output and "closed" in r.output
    assert f"{beta.id} 2026-10" not in r.output  # beta's October is open
    _assert_equal(_stored(client), before, "refused")

    # 2. November, every org: re-enriched with v2.0 (beta at its own prices); October stays v1.0
    r = runner.invoke(app, ["reenrich", "--factors", "v2.0", "--since", "2026-11-01"])
    assert r.exit_code == 0, r.output
    n_nov = sum(e.bucket_start.month == 11 for e in final)
    assert f"{n_nov:,} re-enriched with v2.0" in r.output
    lookup = PriceLookup(engine).prices()
    want = {
        **{k: v for k, v in _expected(final, "v1.0", None).items() if k[1] == "2026-10"},
        **{k: v for k, v in _expected(final, "v2.0", lookup).items() if k[1] == "2026-11"},
    }
    after = _stored(client)
    _assert_equal(after, want, "after")
    _assert_equal(_stored(client, "usage_daily"), want, "rollup")
    versions = client.query(
        "SELECT formatDateTime(bucket_start, '%Y-%m') AS m, factors_version, sum(sign) FROM usage_events "
        "GROUP BY m, factors_version HAVING sum(sign) != 0 ORDER BY m"
    ).result_rows
    assert [(m, v) for m, v, _ in versions] == [("2026-10", "v1.0"), ("2026-11", "v2.0")]
    sources = client.query(
        "SELECT DISTINCT price_source FROM usage_events WHERE org_id = {o:String} AND sign = 1 "
        "AND factors_version = 'v2.0'",
        parameters={"o": beta.id},
    ).result_rows
    assert len(sources) == 1 and sources[0][0].startswith("org override ")

    # 3. again: nothing to do, nothing written
    rows = client.command("SELECT count() FROM usage_events")
    r = runner.invoke(app, ["reenrich", "--factors", "v2.0", "--since", "2026-11-01"])
    assert r.exit_code == 0 and "0 re-enriched" in r.output and f"{n_nov:,} already up to date" in r.output
    assert client.command("SELECT count() FROM usage_events") == rows
    _assert_equal(_stored(client), after, "again")

    # 4. beta alone may go back to October (it has no closed period)
    r = runner.invoke(app, ["reenrich", "--factors", "v2.0", "--since", "2026-10-01", "--org", "beta"])
    assert r.exit_code == 0, r.output
    beta_oct = _expected([e for e in final if e.org_id == beta.id], "v2.0", lookup)
    want[(beta.id, "2026-10")] = beta_oct[(beta.id, "2026-10")]
    _assert_equal(_stored(client), want, "beta october")

    # 5. a late re-send of an original (lower revision) changes nothing
    resent = [enrich(e, v1, NOW) for e in final[:50]]
    result = write_enriched(client, resent)
    stale = sum(not (e.org_id == acme.id and e.bucket_start.month == 10) for e in final[:50])
    assert (result.inserted, result.cancelled, result.skipped_stale) == (0, 0, stale) and 0 < stale < 50
    _assert_equal(_stored(client), want, "after a re-send")


def test_reenrich_rejects_bad_arguments(warehouse, engine, tmp_path, monkeypatch):
    monkeypatch.setenv("JOULESTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JOULESTREAM_DATABASE", str(engine.url))
    monkeypatch.setenv("JOULESTREAM_CH_DATABASE", warehouse[1])
    runner = CliRunner(env={"COLUMNS": "300"})
    r = runner.invoke(app, ["reenrich", "--factors", "v7.7", "--since", "2026-11-01"])
    assert r.exit_code == 2 and "no factor version 'v7.7'" in r.output
    r = runner.invoke(app, ["reenrich", "--factors", "v2.0", "--since", "November"])
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.output
    r = runner.invoke(app, ["reenrich", "--factors", "v2.0", "--since", "2026-11-01", "--org", "nobody"])
    assert r.exit_code == 2 and "no org 'nobody'" in r.output


@pytest.mark.slow
def test_worker_prices_and_reenrich_through_the_running_runtime(stack, worker, monkeypatch):
    """The worker (`joulestream worker --http-port`, the runtime that holds the embedded warehouse, as `up`
    does) enriches with the current set (v2.0) and the org's price override: its totals are the v2.0 figures
    with the override's cost. The command then asks the runtime over loopback (the same queries and the same
    ledger writer): re-enriching with v1.0 makes the totals the v1.0 figures (the direction does not matter
    to the mechanism; v1.0 has no market, embodied or water, and no price book, but the override still prices
    the tokens)."""
    from controlplane import get_engine

    worker.start()  # migrates and seeds the control plane under the stack's home
    engine = get_engine(stack.settings.database)
    org = Orgs(engine).create("runtime-org")
    override, _ = PriceOverrides(engine).put(
        org.id, "*", input=3.0, cached_input=0.3, cache_write=3.75, output=15.0
    )
    traffic = generate(600, days=10, now=datetime.now(UTC), invalid_rate=0, tenants={org.id: ["p1", "p2"]})
    assert publish(stack, traffic.messages) == len(traffic.messages)
    final = list(traffic.final.values())
    worker.wait_for(lambda s: s["totals"]["totals"]["events"] >= len(final), what="the traffic stored")

    def want(version: str, prices) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for e in final:
            en = enrich(e, load_factor_set(version), NOW, prices=prices)
            for f in FIGURES:
                out[f] += getattr(en, f) or 0.0
        return out

    def assert_totals(expected: dict[str, float]) -> None:
        got = worker.totals()["totals"]
        assert got["events"] == len(final)
        for f in FIGURES:
            assert math.isclose(got[f] or 0.0, expected[f], rel_tol=1e-9, abs_tol=1e-12), (
                f,
                got[f],
                expected[f],
            )

    v2 = want("v2.0", as_prices(override))
    assert v2["cost_usd"] > 0 and v2["co2_kg_market"] > 0
    assert_totals(v2)  # the worker applied the override

    for key, value in stack.env.items():
        if key.startswith("JOULESTREAM_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("JOULESTREAM_CLICKHOUSE", raising=False)  # the worker's own path: it holds it
    r = CliRunner(env={"COLUMNS": "300"}).invoke(
        app, ["reenrich", "--factors", "v1.0", "--since", "2015-01-01"]
    )
    assert r.exit_code == 0, r.output
    assert f"{len(final):,} re-enriched with v1.0" in r.output
    v1 = want("v1.0", as_prices(override))
    assert v1["co2_kg_market"] == 0 and v1["cost_usd"] == v2["cost_usd"]  # an override prices any set
    assert_totals(v1)
    assert worker.stop() == 0
