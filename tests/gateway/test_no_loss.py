"""No usage is lost when Kafka goes away: the broker is stopped, 2,000 requests are served (their usage
events are spooled to disk), a broker is started again on the same port, and the warehouse — through the
real pipeline (a `joulestream worker` subprocess: enrich → sink → ClickHouse) — ends with exactly 2,000
gateway events for them: none lost, none twice."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest

from cli.broker import EmbeddedBroker
from tests.gateway.conftest import GatewayHandle, ServerThread, parse_routes, routes_yaml
from tests.stack import Stack, WorkerProcess, free_port

pytestmark = pytest.mark.slow
N = 2000
CONCURRENCY = 32


def test_no_usage_event_lost_while_kafka_is_down(tenants, fresh_stubs, tmp_path):
    from pipelines.gateway import create_gateway_app

    port = free_port()
    broker = EmbeddedBroker(port, log_path=tmp_path / "tansu-1.log").start()
    tag = uuid.uuid4().hex[:10]
    env = {
        **os.environ,
        "JOULESTREAM_HOME": str(tmp_path / "home"),
        "JOULESTREAM_KAFKA": broker.bootstrap,
        "JOULESTREAM_TOPIC_PREFIX": f"t{tag}.",
        "JOULESTREAM_CH_DATABASE": f"noloss_{tag}",
    }
    env.pop("JOULESTREAM_CLICKHOUSE", None)
    stack = Stack(env)
    app = create_gateway_app(
        stack.settings,
        parse_routes(routes_yaml(fresh_stubs)),
        engine=tenants.engine,
        spool_dir=tmp_path / "spool",
        publisher_options={"send_timeout_s": 2.0, "connect_timeout_s": 2.0, "retry_s": 0.5},
    )
    server = ServerThread(app).start()
    gw = GatewayHandle(server, app, stack, tenants)
    worker = WorkerProcess(stack, tmp_path / "worker.log")
    broker2 = None
    try:
        deadline = time.monotonic() + 30
        while gw.http("GET", "/health").json()["kafka"]["kafka"] != "connected":
            assert time.monotonic() < deadline, "gateway never connected to Kafka"
            time.sleep(0.1)
        broker.stop()  # Kafka goes away (memory storage: the topics go with it)

        async def serve() -> list[str]:
            client = gw.aclient()
            sem = asyncio.Semaphore(CONCURRENCY)

            async def one(i: int) -> str:
                async with sem:
                    msgs = [{"role": "user", "content": f"request {i}: what is the capital of France?"}]
                    if i % 10 == 0:  # some streams too
                        async with client.chat.completions.with_streaming_response.create(
                            model="auto", messages=msgs, stream=True
                        ) as resp:
                            async for _ in await resp.parse():
                                pass
                            return resp.headers["x-receipt-id"]
                    raw = await client.chat.completions.with_raw_response.create(model="auto", messages=msgs)
                    return raw.headers["x-receipt-id"]

            try:
                return await asyncio.gather(*[one(i) for i in range(N)])
            finally:
                await client.close()

        receipts = asyncio.run(serve())
        assert len(set(receipts)) == N

        deadline = time.monotonic() + 30
        while gw.http("GET", "/health").json()["spool"]["depth"] < N:
            assert time.monotonic() < deadline, gw.http("GET", "/health").json()
            time.sleep(0.1)
        health = gw.http("GET", "/health").json()
        assert health["spool"]["depth"] == N and health["kafka"]["kafka"] == "unavailable"

        broker2 = EmbeddedBroker(port, log_path=tmp_path / "tansu-2.log").start()  # same port, empty broker
        deadline = time.monotonic() + 60
        while gw.http("GET", "/health").json()["spool"]["depth"]:
            assert time.monotonic() < deadline, gw.http("GET", "/health").json()
            time.sleep(0.2)
        assert gw.http("GET", "/health").json()["status"] == "ok"

        worker.start()
        worker.wait_for(lambda s: s["totals"]["totals"]["events"] >= N, what=f"{N} gateway events")
        time.sleep(3)  # anything beyond N (a duplicate) would show up now
        totals = worker.totals("org")
        assert totals["totals"]["events"] == N and totals["totals"]["request_count"] == N
        assert [(r["org_id"], r["events"]) for r in totals["rows"]] == [(tenants.org_a.id, N)]
    finally:
        server.stop()
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
        broker.stop()
        if broker2 is not None:
            broker2.stop()
