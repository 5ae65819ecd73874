"""A batch runner SIGKILLed mid-batch resumes without losing or double-counting a line: the runner is its own
process (`joulestream batch run`), killed while lines flow, started again; the batch completes with every
custom_id exactly once in the output file, and the warehouse — through the real pipeline (a `joulestream
worker` subprocess: enrich → sink → ClickHouse) — holds exactly one event per line, with the lines' tokens."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.gateway.conftest import GatewayHandle, routes_yaml
from tests.gateway.test_batch_api import jsonl, wait_status
from tests.stack import REPO, WorkerProcess

pytestmark = pytest.mark.slow
N = 400


def start_runner(env: dict[str, str], routes: Path, spool: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "batch",
                "run",
                "--routes",
                str(routes),
                "--spool",
                str(spool),
                "--lease-s",
                "2",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_sigkilled_runner_resumes_every_line_exactly_once(
    make_gateway, fresh_stubs, stack, worker: WorkerProcess, tmp_path: Path
) -> None:
    gw: GatewayHandle = make_gateway()  # the HTTP API; no runner in this process
    fresh_stubs.config("small", delay_s=0.02)
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_yaml(fresh_stubs))
    env = {
        **stack.env,
        "JOULESTREAM_DATABASE": str(gw.tenants.engine.url),
        "JOULESTREAM_BATCH_CONCURRENCY": "8",
        "JOULESTREAM_BATCH_POLL_S": "0.1",
    }
    log = tmp_path / "runner.log"
    client = gw.client()
    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(N))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")

    runner = start_runner(env, routes, tmp_path / "runner-spool", log)
    try:
        deadline = time.monotonic() + 60
        while client.batches.retrieve(b.id).request_counts.completed < N // 5:
            assert runner.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        runner.send_signal(signal.SIGKILL)  # mid-batch: lines in flight, a chunk unrecorded
        runner.wait(10)
        killed_at = client.batches.retrieve(b.id)
        assert killed_at.status == "in_progress" and killed_at.request_counts.completed < N

        runner = start_runner(env, routes, tmp_path / "runner-spool", log)
        b = wait_status(client, b.id, {"completed"}, timeout_s=120)
        assert (b.request_counts.completed, b.request_counts.failed) == (N, 0)
        out = [orjson.loads(x) for x in client.files.content(b.output_file_id).text.splitlines()]
        assert sorted(o["custom_id"] for o in out) == sorted(f"req-{i}" for i in range(N))
        assert fresh_stubs.requests("small") >= N  # a re-run chunk asks the upstream again (at most a chunk)
        assert fresh_stubs.requests("small") <= N + 2 * 8 * 8  # at most the uncommitted backlog twice

        worker.start()
        worker.wait_for(lambda s: s["totals"]["totals"]["events"] >= N, what=f"{N} batch events")
        time.sleep(3)  # a double count would show up now
        totals = worker.totals("org")["totals"]
        usage = [o["response"]["body"]["usage"] for o in out]
        assert totals["events"] == N and totals["request_count"] == N
        assert totals["output_tokens"] == sum(u["completion_tokens"] for u in usage)
        assert totals["input_tokens_uncached"] + totals["input_tokens_cached"] == sum(
            u["prompt_tokens"] for u in usage
        )
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGTERM)
            try:
                runner.wait(30)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()
