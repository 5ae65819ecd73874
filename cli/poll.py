"""`joulestream poll`: run the provider usage poll scheduler (pipelines/pollers) as its own process.

`joulestream up` runs the same scheduler inside the runtime instead (cli/embedded.py, `Pollers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from core.files import private_home
from core.logs import logging_config
from core.settings import Settings

log = logging.getLogger("joulestream.poll")


def poll(
    settings: Settings,
    *,
    once: bool = False,
    interval_s: float | None = None,
    loglevel: str = "INFO",
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> int:
    """Poll until SIGINT/SIGTERM (or one round with `once`). Refuses to start without a usable secret store
    (a master key outside the embedded demo): exit status 2. Returns 0 on a clean stop. With `metrics_port`,
    serves /prometheus/metrics (api/routers/ops.py) on `metrics_host:metrics_port` while it runs."""
    from controlplane import get_engine
    from core.metrics import use_directory
    from core.secrets import SecretStoreError, SecretStores
    from pipelines.pollers.scheduler import PollerConfig, PollScheduler, run_scheduler

    private_home(settings)
    use_directory(settings.metrics_path)
    logging.config.dictConfig(logging_config(loglevel.upper()))
    try:
        secrets = SecretStores.from_settings(settings)
    except SecretStoreError as exc:
        print(f"joulestream poll: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    overrides = {"interval": timedelta(seconds=interval_s)} if interval_s else {}
    config = PollerConfig.from_settings(settings, **overrides)
    engine = get_engine(settings.database)  # migrated by the `poll` command before this runs

    async def main(prod) -> int:
        if once:
            sched = PollScheduler(settings, engine, prod, secrets=secrets, config=config)
            try:
                results = await sched.run_once()
            finally:
                await sched.aclose()
            for r in results:
                print(
                    f"{r.provider:<10} {r.connection_id}  {r.outcome:<9} published={r.published} "
                    f"unchanged={r.unchanged}" + (f"  error={r.error}" if r.error else "")
                )
            return 1 if any(r.outcome == "failed" for r in results) else 0
        stop = stop_on_signals()
        server = _metrics_server(settings, metrics_host, metrics_port) if metrics_port else None
        serving = asyncio.create_task(server.serve()) if server else None
        try:
            await run_scheduler(settings, engine, prod, stop, secrets=secrets, config=config)
        finally:
            if server is not None and serving is not None:
                server.should_exit = True
                await serving
        return 0

    return asyncio.run(with_producer(settings, "poll", main))


async def with_producer(settings: Settings, command: str, body: Callable[[Any], Awaitable[int]]) -> int:
    """`body(producer)` with the topics ensured and a started aiokafka producer (stopped afterwards); 1 with a
    message when Kafka is unreachable. Shared by `joulestream poll` and `joulestream scrape`."""
    from aiokafka.errors import KafkaError

    from core.kafka import ensure_topics, producer

    try:
        await ensure_topics(settings)
    except KafkaError as exc:
        print(f"joulestream {command}: Kafka at {settings.kafka} is unreachable ({exc})", file=sys.stderr)
        return 1
    prod = producer(settings)
    await prod.start()
    try:
        return await body(prod)
    finally:
        await prod.stop()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (in the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _metrics_server(settings: Settings, host: str, port: int):
    """uvicorn serving /prometheus/metrics alone, in the poller's event loop (its signals stay the poller's)."""
    import uvicorn

    from api.routers.ops import prometheus_app

    config = uvicorn.Config(
        prometheus_app(settings), host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # SIGTERM stops the poller
    return server
