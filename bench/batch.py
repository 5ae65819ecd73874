"""Batch throughput: lines/s through the batch runner against the stub upstream, and the same requests sent
straight to the gateway at the same concurrency (the baseline) — in one run.

    .venv/bin/python bench/batch.py [--lines 5000] [--concurrency 16]

What runs (each its own process, on loopback; the helpers are bench/gateway.py's):
  stub      cli/demo_upstream.py, an OpenAI-compatible upstream
  gateway   `joulestream gateway` in front of it (the HTTP API: files, batches), real Kafka (Tansu)
  runner    `joulestream batch run` on the same home: each line through Gateway.serve (auth'd caller,
            routing, budgets, energy headers, signed receipts, usage events) in chunks of --concurrency,
            each chunk waiting until its usage events are in Kafka/the spool and its receipts stored, then
            recorded in the control plane (SQLite)
Figures: runner lines/s (batch created → completed, a warm-up batch first), baseline requests/s (the same
bodies POSTed to /v1/chat/completions, --concurrency in flight), and their ratio. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway import body_for, spawn, start_gateway, start_stub, stop, throughput  # noqa: E402
from cli.broker import EmbeddedBroker  # noqa: E402
from tests.stack import free_port  # noqa: E402

MODEL = "llama-3.3-70b-instruct"


def jsonl(n: int, tag: str) -> bytes:
    body = orjson.loads(body_for(MODEL))
    return b"\n".join(
        orjson.dumps(
            {"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
        for i in range(n)
    )


def run_batch(base: str, key: str, n: int, tag: str) -> tuple[float, dict]:
    h = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=h, timeout=60) as c:
        f = c.post("/v1/files", files={"file": ("in.jsonl", jsonl(n, tag))}, data={"purpose": "batch"})
        f.raise_for_status()
        t = time.perf_counter()
        b = c.post(
            "/v1/batches",
            json={
                "input_file_id": f.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        ).json()
        while b["status"] not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.05)
            b = c.get(f"/v1/batches/{b['id']}").json()
        return time.perf_counter() - t, b


async def baseline(url: str, key: str, n: int, conc: int) -> float:
    async with aiohttp.ClientSession() as s:
        h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        await throughput(s, url, h, body_for(MODEL), min(200, n), conc)  # warm-up
        return await throughput(s, url, h, body_for(MODEL), n, conc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedBroker(free_port(), log_path=Path(tmp) / "tansu.log") as kb,
    ):
        work = Path(tmp)
        stub = gw = runner = None
        try:
            stub, stub_port = start_stub(work)
            gw, port, key, _ = start_gateway(work, stub_port, kb.bootstrap)
            base = f"http://127.0.0.1:{port}"
            env = {
                **os.environ,
                "JOULESTREAM_HOME": str(work / "home"),
                "JOULESTREAM_KAFKA": kb.bootstrap,
                "JOULESTREAM_TOPIC_PREFIX": "bench.",
                "JOULESTREAM_BATCH_CONCURRENCY": str(args.concurrency),
                "JOULESTREAM_BATCH_POLL_S": "0.05",
            }
            env.pop("JOULESTREAM_DATABASE", None)
            runner = spawn(
                [sys.executable, "-m", "cli", "batch", "run", "--routes", str(work / "routes.yaml")],
                env,
                work / "runner.log",
            )
            run_batch(base, key, 100, "warm")  # the runner is up and warm
            secs, b = run_batch(base, key, args.lines, "bench")
            lines_s = args.lines / secs
            counts = b["request_counts"]
            direct = asyncio.run(baseline(f"{base}/v1/chat/completions", key, args.lines, args.concurrency))
            print(
                f"batch runner   {args.lines} lines, concurrency {args.concurrency}: {lines_s:,.0f} lines/s"
            )
            print(
                f"               status {b['status']}, completed {counts['completed']}, failed {counts['failed']}"
            )
            print(f"baseline       the same requests to /v1/chat/completions: {direct:,.0f} requests/s")
            print(f"ratio          runner / baseline = {lines_s / direct:.2f}")
        finally:
            for p in (runner, gw, stub):
                stop(p)


if __name__ == "__main__":
    main()
