"""`joulestream up` keeps the embedded warehouse while the Dagster webserver + daemon (`dagster dev`) run the
monthly close: the job is found and launched over GraphQL, and the run reads the warehouse through the
runtime (loopback HTTP), so it succeeds while `up` keeps running."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.stack import REPO, free_port
from warehouse.runtime import TOKEN_HEADER, RuntimeInfo

pytestmark = pytest.mark.slow

# `up`, with the close router mounted on its HTTP app when cli/embedded.py does not include it yet
UP = """
import sys
import cli.embedded as e
from api.internal_close import close_router
_orig = e.http_app
def http_app(settings, pipeline, runtime, *args, **kwargs):
    app = _orig(settings, pipeline, runtime, *args, **kwargs)
    if not any(getattr(r, "path", "").startswith("/internal/v1/close") for r in app.routes):
        app.include_router(close_router(runtime.token, lambda: pipeline.warehouse))
        from starlette.routing import Mount
        routes = app.router.routes  # keep a catch-all mount (the gateway at "/") last
        routes.sort(key=lambda r: isinstance(r, Mount) and r.path == "")
    return app
e.http_app = http_app
from cli.main import app
sys.argv = ["joulestream", *sys.argv[1:]]
app()
"""


def _reset_signals() -> None:  # dagster dev ignores SIGINT/SIGTERM when started from a non-interactive shell
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop(proc: subprocess.Popen, group: bool = False) -> None:
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(10)


def _gql(url: str, query: str, variables: dict | None = None) -> dict:
    r = httpx.post(url, json={"query": query, "variables": variables or {}}, timeout=60)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body
    return body["data"]


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def test_dagster_run_while_up_holds_the_warehouse(stack, tmp_path):
    if not (Path(sys.executable).parent / "dagster").exists():
        pytest.skip("dagster CLI not installed in the venv")
    from controlplane import Orgs, get_engine
    from controlplane.billing import BillingPeriods, Credits, Receipts
    from core.contracts import UsageEvent
    from core.kafka import OutRecord
    from pipelines.simulate import run_publish
    from tests.orchestration.helpers import INVENTORY_CSV

    env = {
        **stack.env,
        "JOULESTREAM_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }  # pollers' secrets
    settings = stack.settings
    http_port, ui_port = free_port(), free_port()
    up_log, ui_log = tmp_path / "up.log", tmp_path / "dagster.log"
    with open(up_log, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-c", UP, "up", "--events", "200", "--rate", "1", "--http-port", str(http_port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    ui = None
    try:
        deadline = time.monotonic() + 90
        info = None
        while time.monotonic() < deadline and info is None:
            assert up.poll() is None, _log_tail(up_log)
            try:
                candidate = RuntimeInfo.model_validate_json((settings.home / "runtime.json").read_text())
                if candidate.pid == up.pid:
                    httpx.get(
                        f"{candidate.url}/internal/v1/stats",
                        headers={TOKEN_HEADER: candidate.token},
                        timeout=5,
                    ).raise_for_status()
                    info = candidate
            except (FileNotFoundError, ValueError, httpx.HTTPError):
                time.sleep(0.3)
        assert info is not None, _log_tail(up_log)
        headers = {TOKEN_HEADER: info.token}

        engine = get_engine(settings.database)
        demo = Orgs(engine).get_by_slug("demo")
        assert demo is not None and demo.plan_tier != "free"
        Credits(engine).load_csv(INVENTORY_CSV)

        # October usage of the demo org through the real pipeline (Kafka → enrich → sink in `up`)
        start = datetime(2026, 10, 5, 12, tzinfo=UTC)
        messages = []
        for i in range(40):
            t = start + timedelta(hours=i)
            ev = UsageEvent(
                event_id=str(uuid.uuid4()),
                source="gateway",
                org_id=demo.id,
                project_id="p-1",
                workload_id="w-1",
                provider="openai",
                model="gpt-4o",
                bucket_start=t,
                bucket_end=t + timedelta(seconds=3),
                event_timestamp=t + timedelta(seconds=3),
                input_tokens_uncached=2000 + i,
                output_tokens=500,
            )
            messages.append(OutRecord(key=ev.event_id.encode(), value=ev.model_dump_json().encode()))
        run_publish(settings, messages)
        deadline = time.monotonic() + 120
        events = 0
        while time.monotonic() < deadline and events < 40:
            r = httpx.get(
                f"{info.url}/internal/v1/close/totals",
                headers=headers,
                timeout=30,
                params={
                    "org_id": demo.id,
                    "start": "2026-10-01",
                    "end": "2026-11-01",
                    "cutoff": datetime.now(UTC).isoformat(),
                },
            )
            r.raise_for_status()
            events = r.json()["month"]["events"]
            time.sleep(0.5)
        assert events == 40, _log_tail(up_log)

        dagster_home = tmp_path / "dagster_home"
        dagster_home.mkdir()
        with open(ui_log, "wb") as out:
            ui = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "dagster"),
                    "dev",
                    "-m",
                    "orchestration",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(ui_port),
                ],
                cwd=REPO,
                env={**env, "DAGSTER_HOME": str(dagster_home)},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_reset_signals,
                start_new_session=True,
            )
        gql = f"http://127.0.0.1:{ui_port}/graphql"
        deadline = time.monotonic() + 90
        repos = None
        while time.monotonic() < deadline:
            assert ui.poll() is None, _log_tail(ui_log)
            try:
                data = _gql(
                    gql,
                    "{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name "
                    "location { name } jobs { name } } } } }",
                )
                nodes = data["repositoriesOrError"].get("nodes") or []
                if nodes:
                    repos = nodes
                    break
            except (httpx.HTTPError, AssertionError):
                pass
            time.sleep(0.5)
        assert repos, _log_tail(ui_log)
        repo = next(n for n in repos if any(j["name"] == "monthly_close" for j in n["jobs"]))

        launched = _gql(
            gql,
            "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename "
            "... on LaunchRunSuccess { run { runId } } ... on PythonError { message } "
            "... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }",
            {
                "p": {
                    "selector": {
                        "repositoryLocationName": repo["location"]["name"],
                        "repositoryName": repo["name"],
                        "jobName": "monthly_close",
                    },
                    "runConfigData": {},
                    "executionMetadata": {
                        "tags": [
                            {"key": "dagster/partition", "value": "2026-10-01"},
                            {"key": "joulestream/org", "value": "demo"},
                            {"key": "joulestream/cutoff", "value": datetime.now(UTC).isoformat()},
                        ]
                    },
                }
            },
        )["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline:
            status = _gql(
                gql, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
            )["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(1)
        assert status == "SUCCESS", f"run {status}\n{_log_tail(ui_log)}"

        assert up.poll() is None  # `up` kept running (and holding the warehouse) throughout
        assert httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10).status_code in (200, 503)
        period = BillingPeriods(engine).get_for(demo.id, "2026-10")
        assert period.status == "closed" and period.figures["month_totals"]["events"] == 40
        assert Receipts(engine).for_period(period.id).serial_number == "CL-202610-00001"
    finally:
        if ui is not None:
            _stop(ui, group=True)
        _stop(up)
