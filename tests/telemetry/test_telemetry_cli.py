"""`joulestream gpu-targets add|list|delete` and `joulestream calibration` on a real control plane and the
test session's warehouse (chdb): measured events written to the signed ledger with two revisions each (a
re-publication after lost scraper state) count once, and the calibration shows the expected ratios."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete
from typer.testing import CliRunner

from cli.main import app
from controlplane import Orgs
from controlplane.gpu_targets import GpuTargets
from controlplane.schema import gpu_buckets
from core.contracts import UsageEvent
from core.methodology import enrich, load_factor_set
from tests.telemetry.scenario import A, H, M, base_hour, expected
from tests.telemetry.test_telemetry_scraper import scrape_scenario
from warehouse.ledger import write_enriched


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_targets_and_calibration_commands(engine, stub, warehouse, monkeypatch, tmp_path) -> None:
    client, database = warehouse
    org = Orgs(engine).create("gpu-cli")
    monkeypatch.setenv("JOULESTREAM_HOME", str(tmp_path / "home"))  # no runtime.json: the warehouse here
    monkeypatch.setenv("JOULESTREAM_DATABASE", str(engine.url))
    monkeypatch.setenv("JOULESTREAM_CH_DATABASE", database)
    runner = CliRunner(env={"COLUMNS": "300"})

    r = runner.invoke(
        app, ["gpu-targets", "add", "--org", "gpu-cli", "--name", "node 1", "--provider", "aws"]
    )
    assert r.exit_code == 2 and "dcgm_url" in r.output  # no source
    args = ["gpu-targets", "add", "--org", "gpu-cli", "--name", "node 1", "--provider", "aws",
            "--region", "us-east-1", "--dcgm-url", f"{stub.url}/dcgm/metrics",
            "--server-url", f"{stub.url}/vllm/s1/metrics", "--gpu", A, "--gpu", "1"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    target_id = r.output.strip()
    r = runner.invoke(app, ["gpu-targets", "list", "--org", "gpu-cli", "--json"])
    [listed] = json.loads(r.output)
    assert listed["id"] == target_id and listed["gpus"] == [A, "1"]

    # the scenario, scraped into a recording producer, then enriched and written as the worker would
    t0 = base_hour()
    prod, s, _ = scrape_scenario(engine, stub, t0)
    with engine.begin() as conn:
        conn.execute(delete(gpu_buckets))
    asyncio.run(s.run_once(t0 + 4 * H + 10 * M))
    fs, now = load_factor_set(), datetime.now(UTC)
    events = [enrich(UsageEvent.model_validate_json(v), fs, now) for _, _, v in prod.sent]
    assert len(events) == 2 * len(expected(t0))
    write_enriched(client, events[: len(events) // 2])
    write_enriched(client, events[len(events) // 2 :])

    r = runner.invoke(
        app,
        [
            "calibration",
            "--org",
            "gpu-cli",
            "--start",
            t0.isoformat(),
            "--end",
            (t0 + 5 * H).isoformat(),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = {row["model"]: row for row in json.loads(r.output)}
    host = fs.measurement.gpu_host_factor.point
    weights = {"meta-llama/Llama-3.1-8B-Instruct": (0.05, 0.3), "Qwen/Qwen2.5-72B-Instruct": (0.2, 1.2)}
    for model, (wp, wd) in weights.items():
        mine = [v for (_, m), v in expected(t0).items() if m == model]
        gpu_j = sum(j for j, _, _ in mine)
        est = sum(p * wp + g * wd for _, p, g in mine)
        row = rows[model]
        assert row["tokens"] == sum(p + g for _, p, g in mine) and row["hours"] == len(mine)
        assert math.isclose(row["measured_gpu_j"], gpu_j) and math.isclose(row["measured_it_j"], gpu_j * host)
        assert math.isclose(row["estimated_it_j"], est) and math.isclose(row["ratio"], gpu_j * host / est)
    r = runner.invoke(app, ["calibration", "--org", "gpu-cli", "--start", t0.isoformat()])
    assert r.exit_code == 0 and "Qwen/Qwen2.5-72B-Instruct" in r.output

    r = runner.invoke(app, ["gpu-targets", "delete", "--org", "gpu-cli", target_id])
    assert r.exit_code == 0 and GpuTargets(engine).list(org.id) == []
    r = runner.invoke(app, ["gpu-targets", "delete", "--org", "gpu-cli", target_id])
    assert r.exit_code == 1 and "not found" in r.output
