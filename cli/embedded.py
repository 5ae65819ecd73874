"""Running the stream worker in-process: the Faust worker, its HTTP server, and (for `up`) the
simulated traffic and the live console."""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import faust
from fastapi import FastAPI
from faust.contrib.asgi import AsgiService, maybe_instrument_opentelemetry
from mode import Service
from rich.console import Console
from rich.live import Live
from rich.table import Table

from api.internal import internal_router
from api.internal_close import close_router
from api.internal_reenrich import reenrich_router
from cli.serving import proxy_options
from controlplane import FactorVersions, get_engine
from core.files import private_home
from core.kafka import OutRecord, check_kafka, send_many
from core.logs import logging_config
from core.metrics import use_directory
from core.settings import Settings
from pipelines import simulate
from streams.split import EnrichProcess, EnrichSupervisor
from streams.worker import Pipeline, build_app
from warehouse.client import ping
from warehouse.runtime import RuntimeInfo, clear_runtime, publish_runtime

log = logging.getLogger(__name__)


class ServiceFailed(RuntimeError):
    """A part of the runtime stopped on its own (a crashed service, a child process that exited, an HTTP
    server that could not serve): the message says which and why. It crashes the whole worker."""


class StackCrashed(Exception):
    """`run_worker` ended because a part crashed; `reason` is the crash (shown on the console)."""

    def __init__(self, reason: BaseException) -> None:
        super().__init__(
            f"{type(reason).__name__}: {reason}" if not isinstance(reason, ServiceFailed) else str(reason)
        )
        self.reason = reason


def http_app(
    settings: Settings, pipeline: Pipeline, runtime: RuntimeInfo, gateway_routes: Path | None = None
) -> FastAPI:
    """The runtime's one HTTP server: the public API (/api/v1, /health) over the warehouse this process
    holds, the token-protected /internal/v1 endpoints for operator commands, and — given a routing
    file — the OpenAI-compatible gateway (/v1/...)."""
    from api.app import create_app
    from api.telemetry_provider import WarehouseTelemetry
    from pipelines.pollers.scheduler import last_poll_at

    warehouse = pipeline.open_warehouse()
    engine = get_engine(settings.database)

    async def kafka_check() -> int:
        if pipeline.producer is None:
            raise RuntimeError("Kafka producer not started yet")
        return await check_kafka(pipeline.producer, settings.raw_topic)

    async def warehouse_check() -> None:
        await warehouse.run(ping)

    api = create_app(
        settings,
        engine=engine,
        telemetry=WarehouseTelemetry(warehouse),
        warehouse_check=warehouse_check,
        kafka_check=kafka_check,
        last_poll=lambda: last_poll_at(engine),
    )
    api.include_router(internal_router(runtime.token, lambda: pipeline.warehouse, pipeline.stats))
    api.include_router(close_router(runtime.token, lambda: pipeline.warehouse))
    api.include_router(reenrich_router(runtime.token, lambda: pipeline.warehouse))
    if gateway_routes is not None:
        _mount_gateway(api, settings, engine, gateway_routes)
    return api


def _mount_gateway(api: FastAPI, settings: Settings, engine: Any, routes: Path) -> None:
    """Serve the gateway's /v1/... next to the API (the API's routes match first), with the batch runner. A
    mounted app gets no lifespan events of its own: the parent's lifespan starts and stops it."""
    from pipelines.gateway import create_gateway_app, load_routes

    gw_app = create_gateway_app(settings, load_routes(routes), engine=engine, batch_runner=True)
    parent_lifespan = api.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with parent_lifespan(app) as state:
            await gw_app.state.gateway.start()
            gw_app.state.batch_runner.start()  # the Batch API's runner (docs/batch.md)
            try:
                yield state
            finally:
                await gw_app.state.batch_runner.stop()
                await gw_app.state.gateway.stop()

    api.router.lifespan_context = lifespan
    api.mount("/", gw_app)


class Pollers(Service):
    """The provider usage poll scheduler (pipelines/pollers) and the GPU telemetry scraper (pipelines/telemetry),
    in the runtime's process."""

    def __init__(self, settings: Settings, pipeline: Pipeline, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings, self.pipeline = settings, pipeline
        self._stop = asyncio.Event()

    @Service.task
    async def _poll(self) -> None:
        from pipelines.pollers.scheduler import run_scheduler

        while self.pipeline.producer is None:
            await asyncio.sleep(0.1)
        from pipelines.telemetry.scheduler import run_telemetry  # the GPU telemetry scraper, alongside

        engine, producer = get_engine(self.settings.database), self.pipeline.producer
        try:
            await asyncio.gather(
                run_scheduler(self.settings, engine, producer, self._stop),
                run_telemetry(self.settings, engine, producer, self._stop),
            )
        except Exception as exc:
            raise ServiceFailed(f"the provider pollers stopped: {type(exc).__name__}: {exc}") from exc

    async def on_stop(self) -> None:
        self._stop.set()


class ChildWatch(Service):
    """Watches the child processes `up` started next to the worker (the embedded broker, the demo
    upstream): one that exits crashes the worker, so `up` ends with the reason instead of running on
    with a dead part."""

    def __init__(self, children: dict[str, subprocess.Popen[bytes]], **kw: Any) -> None:
        super().__init__(**kw)
        self.children = children

    @Service.timer(0.5)
    async def _watch(self) -> None:
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None and not self.should_stop:
                how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
                raise ServiceFailed(f"{name} (pid {proc.pid}) {how}")


class HttpServer(AsgiService):
    """faust's ASGI service (uvicorn on the worker's loop), which also crashes the worker when the server
    stops on its own — a port already taken, an app whose start-up failed — instead of leaving the
    runtime up without its API."""

    async def on_start(self) -> None:
        maybe_instrument_opentelemetry(self.asgi_app, self.opentelemetry)
        self._server = self._create_server()
        self._serve_fut = self.add_future(self._serve(self._server))

    async def _serve(self, server: Any) -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits the process when it cannot bind; here it ends the server only
            pass
        if self._server is server and not self.should_stop:  # not asked to stop (on_stop clears _server)
            what = "stopped" if server.started else "could not start (port in use, or the app failed)"
            await self.crash(ServiceFailed(f"the HTTP server on {self.host}:{self.port} {what}"))


def serve_http(app: faust.App, asgi_app: Any, host: str, port: int, **uvicorn_options: Any) -> None:
    """`faust.contrib.asgi.serve_asgi`, with `HttpServer` as the worker's web server."""
    cls = type(
        "JoulestreamHttpServer",
        (HttpServer,),
        {
            "asgi_app": asgi_app,
            "faust_app": app,
            "host": host,
            "port": port,
            "uvicorn_options": uvicorn_options,
        },
    )
    app.web_server(cls)


class SimulatedTraffic(Service):
    """A burst of `initial` events spread over the past week, then `rate` live events per second."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        initial: int,
        rate: float,
        tenants: simulate.Tenants | None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.settings, self.pipeline, self.initial, self.rate = settings, pipeline, initial, rate
        self.tenants = tenants
        self.published = 0

    @Service.task
    async def _traffic(self) -> None:
        try:
            await self._publish()
        except Exception as exc:
            raise ServiceFailed(f"the simulated traffic stopped: {type(exc).__name__}: {exc}") from exc

    async def _publish(self) -> None:
        while self.pipeline.producer is None:  # the pipeline opens on app start-up
            await asyncio.sleep(0.1)
        prod = self.pipeline.producer
        if self.initial:
            traffic = simulate.generate(self.initial, seed=int(time.time()), tenants=self.tenants)
            for i in range(0, len(traffic.messages), 5000):
                self.published += await send_many(
                    prod, self.settings.raw_topic, traffic.messages[i : i + 5000]
                )
        rng = random.Random()
        while not self.should_stop and self.rate > 0:
            batch = [simulate.live_event(rng, self.tenants) for _ in range(max(1, int(self.rate)))]
            self.published += await send_many(
                prod,
                self.settings.raw_topic,
                [OutRecord(e.event_id.encode(), e.model_dump_json().encode()) for e in batch],
            )
            await asyncio.sleep(1)


class LiveConsole(Service):
    """Live counts on the terminal: received, enriched, stored, duplicates dropped, DLQ."""

    def __init__(
        self, pipeline: Pipeline, traffic: SimulatedTraffic | None, banner: list[str], **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.pipeline, self.traffic, self.banner = pipeline, traffic, banner

    def _table(self) -> Table:
        st = self.pipeline.stats()
        e, s = st.get("enrich", {}), st.get("sink", {})
        t = Table(title="joulestream — live pipeline (Ctrl-C to stop)", title_justify="left")
        for col in ("published (simulated)", "received", "enriched", "duplicates dropped", "stored", "DLQ"):
            t.add_column(col, justify="right")
        t.add_row(
            str(self.traffic.published if self.traffic else "-"),
            str(e.get("consumed", 0)),
            str(e.get("enriched", 0)),
            str(e.get("duplicates", 0) + s.get("skipped", 0)),
            str(s.get("stored", 0)),
            str(self.pipeline.total_dlq),
        )
        return t

    @Service.task
    async def _show(self) -> None:
        console = Console()
        for line in self.banner:
            console.print(line, soft_wrap=True)  # URLs stay whole, whatever the width
        with Live(self._table(), console=console, refresh_per_second=2) as live:
            while not self.should_stop:
                live.update(self._table())
                await asyncio.sleep(0.5)


def run_worker(
    settings: Settings,
    *,
    http_port: int | None = None,
    simulate_initial: int = 0,
    simulate_rate: float = 0.0,
    console_banner: list[str] | None = None,
    with_pollers: bool = False,
    gateway_routes: Path | None = None,
    tenants: simulate.Tenants | None = None,
    loglevel: str = "INFO",
    logfile: str | None = None,
    split: bool = True,
    metrics_port: int | None = None,
    children: dict[str, subprocess.Popen[bytes]] | None = None,
    stage: str = "all",
    metrics_host: str = "127.0.0.1",
) -> None:
    """Run the stream worker until SIGINT/SIGTERM. Blocks. With `split`, the enrich agent runs in a
    child process (streams/split.py) so the two stages use two cores. The control-plane database must be
    migrated first (the `worker` and `up` commands do it before calling this). `children`: processes
    started next to it (name → process) whose exit must stop the runtime.

    Raises StackCrashed when a part crashed (a service, a watched child, the HTTP server): the worker
    stops as a whole and the caller reports the reason.

    `stage` (docs/deployment.md): `all` runs both agents; `enrich` only the enrich agent (no warehouse: any
    number of them share the raw topic's partitions in one consumer group); `sink` only the sink agent.

    Metrics (core/metrics.py): this process and its enrich child record into one multiprocess directory;
    the runtime HTTP server (`http_port`) — or, without one, a server of /prometheus/metrics alone
    (`metrics_port`) — answers for both."""
    private_home(settings)
    use_directory(settings.metrics_path)  # before the enrich child starts: it inherits the directory
    engine = get_engine(settings.database)
    FactorVersions(engine).ensure_seeded()
    if stage == "enrich" and http_port is not None:
        raise ValueError("an enrich-only worker holds no warehouse: it serves no runtime HTTP API")
    split = split and stage == "all"
    child = EnrichProcess(settings, loglevel, logfile).start() if split else None
    pipeline = Pipeline(
        settings, with_enrich=stage == "enrich" or (stage == "all" and not split), with_sink=stage != "enrich"
    )
    if child is not None:
        pipeline.external_stats = lambda: {
            **child.stats.read(),
            "pid": child.proc.pid,
            "restarts": child.restarts,
        }
    # the Faust app's own consumer group (named after the app id): one per stage and topic prefix, and never
    # the name of an agent's group (streams/worker.py) — two protocols in one group fail to join it
    app_id = "joulestream" if stage == "all" else f"{settings.topic_prefix}joulestream-{stage}-app"
    app = build_app(settings, pipeline, app_id=app_id)
    runtime: RuntimeInfo | None = None
    if http_port is not None:
        runtime = publish_runtime(settings, f"http://127.0.0.1:{http_port}")
        serve_http(
            app,
            http_app(settings, pipeline, runtime, gateway_routes),
            host="127.0.0.1",
            port=http_port,
            log_level="warning",
            **proxy_options(settings),
        )
        app.conf.web_enabled = True
    elif metrics_port is not None:  # no runtime HTTP server: /prometheus/metrics alone
        from api.routers.ops import prometheus_app

        serve_http(app, prometheus_app(settings), host=metrics_host, port=metrics_port, log_level="warning")
        app.conf.web_enabled = True
    if child is not None:
        app.add_dependency(EnrichSupervisor(child, loop=app.loop, beacon=app.beacon))
    if children:
        app.add_dependency(ChildWatch(children, loop=app.loop, beacon=app.beacon))
    if with_pollers:
        app.add_dependency(Pollers(settings, pipeline, loop=app.loop, beacon=app.beacon))
    traffic = None
    if simulate_initial or simulate_rate:
        traffic = SimulatedTraffic(
            settings, pipeline, simulate_initial, simulate_rate, tenants, loop=app.loop, beacon=app.beacon
        )
        app.add_dependency(traffic)
    if console_banner is not None:
        app.add_dependency(LiveConsole(pipeline, traffic, console_banner, loop=app.loop, beacon=app.beacon))
    worker = faust.Worker(
        app,
        loglevel=loglevel,
        logfile=logfile,
        logging_config=logging_config(loglevel, logfile),
        redirect_stdouts=False,
        quiet=console_banner is not None,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        if child is not None:
            child.stop()
        if runtime:
            clear_runtime(settings, runtime)
    if worker.crash_reason is not None:
        raise StackCrashed(worker.crash_reason)
