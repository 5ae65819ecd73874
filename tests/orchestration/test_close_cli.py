"""`joulestream credits load` and `joulestream close-month` (the commands, through typer)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from typer.testing import CliRunner

from cli.close import register_close_commands
from controlplane import Orgs
from controlplane.billing import BillingPeriods, Credits, Receipts
from tests.orchestration.helpers import INVENTORY_CSV, pipeline_usage


def test_credits_load_and_close_month(close_env, tmp_path, monkeypatch):
    env = close_env
    monkeypatch.setenv("JOULESTREAM_HOME", str(env.home))
    monkeypatch.setenv("JOULESTREAM_DATABASE", env.db_url)
    monkeypatch.setenv("JOULESTREAM_CH_DATABASE", env.database)
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    register_close_commands(app)
    runner = CliRunner()
    csv_path = tmp_path / "credits.csv"
    csv_path.write_text(INVENTORY_CSV)
    r = runner.invoke(app, ["credits", "load", str(csv_path)])
    assert r.exit_code == 0, r.output
    assert "3 block(s) loaded" in r.output
    assert runner.invoke(app, ["credits", "load", str(csv_path)]).output.startswith("0 block(s) loaded, 3")
    assert len(Credits(env.engine).blocks()) == 3

    org = Orgs(env.engine).create("acme", plan_tier="starter")
    pipeline_usage(env.client, [org.id], datetime(2026, 9, 1, tzinfo=UTC), 30)
    r = runner.invoke(app, ["close-month", "2026-09", "--org", "acme"])
    assert r.exit_code == 0, r.output
    assert "2026-09 closed" in r.output and "CL-202609-00001" in r.output
    period = BillingPeriods(env.engine).get_for(org.id, "2026-09")
    assert period.status == "closed"
    assert Receipts(env.engine).for_period(period.id).serial_number == "CL-202609-00001"
    assert runner.invoke(app, ["close-month", "2026-13"]).exit_code != 0
