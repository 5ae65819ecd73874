"""The GPU telemetry scraper against local stub exporters (real exposition text, parsed by prometheus_client)
and the real control plane (SQLite and PostgreSQL), publishing to a recording producer: counter resets, a
failed scrape, a gap across an hour boundary; exact joules per model and hour; a re-scrape publishes
nothing; a changed hour gets a higher revision of the same event id; the Prometheus range API gives the
same events as scraping."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime

import pytest

from controlplane import Orgs
from controlplane.gpu_targets import GpuTargetIn, GpuTargets
from core.contracts import UsageEvent
from core.methodology import load_factor_set
from core.methodology.measured import HOUR, PhaseWeights, Tokens, attribute, counter_increase, spread
from core.settings import load_settings
from pipelines.telemetry.scheduler import TelemetryScraper
from tests.pollers.conftest import FakeProducer
from tests.telemetry.scenario import A, H, M, base_hour, expected, script

SETTINGS = load_settings({"JOULESTREAM_TELEMETRY_LOOKBACK_H": "24"})


class _Factors:
    def current(self):
        return load_factor_set()


def scraper(engine, producer) -> TelemetryScraper:
    return TelemetryScraper(SETTINGS, engine, producer, factors=_Factors())  # type: ignore[arg-type]


def live(producer: FakeProducer) -> dict[str, UsageEvent]:
    out: dict[str, UsageEvent] = {}
    for _, _, value in producer.sent:
        ev = UsageEvent.model_validate_json(value)
        if ev.event_id not in out or ev.revision > out[ev.event_id].revision:
            out[ev.event_id] = ev
    return out


def check(events: dict[str, UsageEvent], t0: datetime) -> None:
    got = {(e.bucket_start, e.model): e for e in events.values()}
    want = expected(t0)
    assert set(got) == set(want)
    for key, (joules, prompt, gen) in want.items():
        e = got[key]
        assert math.isclose(e.measured_energy_j, joules, rel_tol=1e-12), key
        assert (e.input_tokens_uncached, e.output_tokens) == (prompt, gen), key
        assert (e.measured_by, e.measured_boundary, e.source) == ("dcgm", "gpu", "telemetry")
        assert (e.provider, e.region, e.bucket_end - e.bucket_start) == ("aws", "us-east-1", HOUR)


def test_formula_pieces() -> None:
    assert counter_increase(10, 25) == (15, False)
    assert counter_increase(25, 4) == (4, True)  # restarted from 0
    t0 = base_hour()
    parts = spread(t0 + 45 * M, t0 + 2 * H + 15 * M, 90.0)  # 15 + 60 + 15 minutes
    assert [h for h, _ in parts] == [t0, t0 + H, t0 + 2 * H]
    assert [round(v, 9) for _, v in parts] == [15.0, 60.0, 15.0] and sum(v for _, v in parts) == 90.0
    w = {"s": PhaseWeights(0.05, 0.3), "l": PhaseWeights(0.2, 1.2)}
    # a generated token weighs 6 prompt tokens: 600 prompt tokens = 100 generated ones
    assert attribute(70.0, {"s": Tokens(600, 0), "l": Tokens(0, 0)}, w) == {"s": 70.0, "l": 0.0}
    shares = attribute(70.0, {"s": Tokens(600, 0), "l": Tokens(0, 50)}, w)  # weights 30 and 60
    assert math.isclose(shares["s"], 70 / 3) and math.isclose(shares["l"], 140 / 3)
    assert attribute(10.0, {"s": Tokens(0, 0), "l": Tokens(0, 0)}, w) == {"l": 5.0, "s": 5.0}  # idle
    assert attribute(10.0, {}, w) == {}


def scrape_scenario(engine, stub, t0: datetime) -> tuple[FakeProducer, TelemetryScraper, list]:
    """A target on the stub, scraped through the whole scenario into a recording producer."""
    prod = FakeProducer()
    s = scraper(engine, prod)
    results = []
    for at, fail in script(stub, t0):
        stub.fail = {"/dcgm/metrics"} if fail else set()
        results += asyncio.run(s.run_once(at))
    return prod, s, results


def _target(engine, stub, **kw):
    org = Orgs(engine).create("gpu-org")
    spec = {
        "name": "h100 node 1",
        "dcgm_url": f"{stub.url}/dcgm/metrics",
        "server_urls": [f"{stub.url}/vllm/s1/metrics"],
        "gpus": [A, "1"],  # GPU A by UUID, GPU B by index; GPU C (another pod) is not ours
        "provider": "aws",
        "region": "us-east-1",
        **kw,
    }
    return GpuTargets(engine).create(org.id, GpuTargetIn.model_validate(spec))


def test_scrapes_attribute_exact_joules_per_model_and_hour(engine, stub) -> None:
    target = _target(engine, stub)
    t0 = base_hour()
    prod, s, results = scrape_scenario(engine, stub, t0)
    outcomes = [r.outcome for r in results]
    assert outcomes == ["ok"] * 4 + ["failed"] + ["ok"] * 4
    assert "503" in (results[4].error or "")
    assert GpuTargets(engine).get(target.org_id, target.id).last_error is None  # cleared by the next success
    assert sum(r.resets for r in results) == 5  # GPU A's energy; prompt and generation of both models
    events = live(prod)
    check(events, t0)
    assert len(prod.sent) == len(events)  # each (hour, model) published once: closed hours only
    assert all(e.workload_id == target.id and e.project_id == target.project_id for e in events.values())

    # a re-scrape (same counters, later) publishes nothing new for the closed hours
    sent = len(prod.sent)
    r = asyncio.run(s.run_once(t0 + 4 * H + 20 * M))
    assert r[0].published == 0 and len(prod.sent) == sent


def test_prometheus_range_api_gives_the_same_events(engine, stub) -> None:
    t0 = base_hour()
    # a target scraped over Prometheus' range API: record what the exporters showed, as Prometheus would
    samples: dict[str, list] = {}
    for at, fail in script(stub, t0):
        if fail:
            continue
        ts = at.timestamp()
        for g in stub.gpus:
            labels = {"gpu": str(g.index), "UUID": g.uuid, "Hostname": g.hostname, "modelName": g.model_name,
                      "instance": "gpu-node-1:9400", "job": "dcgm"}  # fmt: skip
            samples.setdefault(("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", g.uuid), (labels, []))[1].append(
                (ts, g.energy_mj)
            )
        for model, m in stub.servers["s1"].items():
            labels = {"model_name": model, "engine": "0", "instance": "vllm-0:8000", "job": "vllm"}
            for metric, v in (
                ("vllm:prompt_tokens_total", m.prompt),
                ("vllm:generation_tokens_total", m.generation),
            ):
                samples.setdefault((metric, model), (labels, []))[1].append((ts, v))
    for (metric, _), series in samples.items():
        stub.prom.setdefault(metric, []).append(series)
    _target(engine, stub, dcgm_url=None, server_urls=[], prometheus_url=f"{stub.url}/prom",
                     hostname="gpu-node-1")  # fmt: skip
    prod = FakeProducer()
    s = scraper(engine, prod)
    (r,) = asyncio.run(s.run_once(t0 + 4 * H + 1 * M))
    assert r.outcome == "ok", r.error
    events = live(prod)
    check(events, t0)

    # Prometheus reads the same range again plus one late sample in the open hour: nothing changes
    (r,) = asyncio.run(s.run_once(t0 + 4 * H + 2 * M))
    assert r.published == 0


def test_a_changed_hour_replaces_its_event_with_a_higher_revision(engine, stub) -> None:
    """A new factor set with other per-phase weights re-splits the hours the lookback still holds: the same
    event ids come again with a higher revision; each hour still sums to the GPUs' measured energy. Lost
    publishing state re-publishes the same figures with higher revisions (which replace themselves)."""
    from sqlalchemy import delete

    from controlplane.schema import gpu_buckets
    from core.methodology import parse_factor_set
    from tests.fixtures_controlplane import tiny_factors

    _target(engine, stub)
    t0 = base_hour()
    prod, _, _ = scrape_scenario(engine, stub, t0)
    before = live(prod)

    class Tiny:  # llama and qwen both fall back to "large" here: equal per-phase weights 0.5 / 3.0
        def current(self):
            return parse_factor_set(tiny_factors())

    s2 = TelemetryScraper(SETTINGS, engine, prod, factors=Tiny())  # type: ignore[arg-type]
    (r,) = asyncio.run(s2.run_once(t0 + 4 * H + 20 * M))
    assert r.published == 4  # h0 and h1 (two models each); h2 and h3 had one model: unchanged
    after = live(prod)
    assert after.keys() == before.keys()
    changed = [eid for eid in after if after[eid].revision > before[eid].revision]
    assert len(changed) == 4
    by_hour: dict[datetime, float] = {}
    for e in after.values():
        by_hour[e.bucket_start] = by_hour.get(e.bucket_start, 0.0) + e.measured_energy_j
    want = {t0: 5400.0, t0 + H: 4800.0, t0 + 2 * H: 2400.0, t0 + 3 * H: 2400.0}
    assert all(math.isclose(by_hour[h], j) for h, j in want.items())
    h0_llama = next(e for e in after.values() if e.bucket_start == t0 and "Llama" in e.model)
    assert math.isclose(
        h0_llama.measured_energy_j, 5400 * 22_000 / 27_500
    )  # 20000×0.5+4000×3 vs 5000×0.5+1000×3

    with engine.begin() as conn:
        conn.execute(delete(gpu_buckets))
    (r,) = asyncio.run(s2.run_once(t0 + 4 * H + 30 * M))
    assert r.published == 6
    again = live(prod)
    assert all(again[e].revision > after[e].revision for e in again)
    assert all(again[e].measured_energy_j == after[e].measured_energy_j for e in again)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bad_configuration_is_refused(engine) -> None:
    from pydantic import ValidationError

    for bad in (
        {"name": "x", "provider": "aws"},  # no source
        {"name": "x", "provider": "aws", "dcgm_url": "http://h/metrics"},  # no model server
        {
            "name": "x",
            "provider": "aws",
            "prometheus_url": "http://p",
            "dcgm_url": "http://h/m",
            "server_urls": ["http://s/m"],
        },  # fmt: skip
        {"name": "x", "provider": "aws", "dcgm_url": "ftp://h/metrics", "server_urls": ["http://s/m"]},
    ):
        with pytest.raises(ValidationError):
            GpuTargetIn.model_validate(bad)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unreadable_endpoints_fail_the_target_not_the_round(engine, stub) -> None:
    """A 404, a body that is not exposition text, an exporter without the target's GPUs, a Prometheus error:
    each fails its own target with a reason (stored as last_error); the other targets are scraped."""
    good = _target(engine, stub)
    org_id = good.org_id
    targets = GpuTargets(engine)
    specs = {
        "404": {"server_urls": [f"{stub.url}/vllm/nope/metrics"]},
        "unreadable": {"dcgm_url": f"{stub.url}/prom/api/v1/query_range?query=x&start=0&end=1&step=1"},
        "no series": {"gpus": ["GPU-not-here"]},
        "prometheus": {"dcgm_url": None, "server_urls": [], "prometheus_url": f"{stub.url}/nothing"},
    }
    base = good.model_dump(include={"dcgm_url", "server_urls", "gpus", "provider"})
    ids = {
        name: targets.create(org_id, GpuTargetIn.model_validate({**base, "name": name, **spec})).id
        for name, spec in specs.items()
    }
    results = {r.target_id: r for r in asyncio.run(scraper(engine, FakeProducer()).run_once(base_hour()))}
    assert results[good.id].outcome == "ok"
    for name, tid in ids.items():
        r = results[tid]
        assert r.outcome == "failed" and r.error, name
        assert targets.get(org_id, tid).last_error == r.error
    assert "404" in results[ids["404"]].error
    assert "unreadable exposition text" in results[ids["unreadable"]].error
    assert "no DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION series" in results[ids["no series"]].error
    assert "Prometheus" in results[ids["prometheus"]].error
