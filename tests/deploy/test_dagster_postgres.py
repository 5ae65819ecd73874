"""The compose deployment's Dagster instance (deploy/dagster/dagster.yaml: run, event-log and schedule storage on
PostgreSQL, queued runs) on the real PostgreSQL here, in a fresh database: the instance loads, a run executes
and its events are read back from PostgreSQL, and the workspace's code location loads. The webserver and
daemon processes themselves run only in the compose stack (not run here: no images)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from tests.stack import REPO

dagster = pytest.importorskip("dagster")
pytest.importorskip("dagster_postgres", reason="the `server` extra (dagster-postgres) is not installed")


@pytest.fixture
def dagster_db(pg_admin) -> Iterator[dict]:
    if pg_admin is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"dagster_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_admin.url
    try:
        yield {
            "hostname": url.host or "127.0.0.1",
            "port": url.port or 5432,
            "username": url.username,
            "db": name,
        }
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_compose_dagster_instance_on_postgres(dagster_db: dict, tmp_path: Path, monkeypatch) -> None:
    config = yaml.safe_load((REPO / "deploy/dagster/dagster.yaml").read_text())
    pg = config["storage"]["postgres"]["postgres_db"]
    assert pg["password"] == {"env": "POSTGRES_PASSWORD"}  # the secret comes from the environment
    pg.update(hostname=dagster_db["hostname"], port=dagster_db["port"], db_name=dagster_db["db"])
    pg["username"] = dagster_db["username"]
    config["compute_logs"]["config"]["base_dir"] = str(tmp_path / "compute_logs")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("POSTGRES_PASSWORD", "unused-with-trust-auth")

    @dagster.op
    def one() -> int:
        return 1

    @dagster.job
    def smoke() -> None:
        one()

    with dagster.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        result = smoke.execute_in_process(instance=instance)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.is_success
        assert instance.all_logs(result.run_id)  # events read back from PostgreSQL

    workspace = yaml.safe_load((REPO / "deploy/dagster/workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    import importlib

    defs = importlib.import_module(module).defs
    assert defs.get_repository_def().get_all_jobs()  # the code location the webserver and daemon load
