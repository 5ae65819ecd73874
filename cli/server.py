"""Server-mode commands (docs/deployment.md), mounted on the main app by `register_server_commands`:
`joulestream topics` (the topic-creation step) and `joulestream api`, the dashboard API as its own process.

It reads a ClickHouse server (`JOULESTREAM_CLICKHOUSE=http://…`) that the sink workers write; any number of
replicas can run behind a load balancer (their public rate limit shares `JOULESTREAM_RATE_LIMIT_STORAGE`).
With the embedded warehouse (chdb) only one process may hold the warehouse: the worker started with
`--http-port` serves this same API there, and this command refuses to start while another process holds it.
"""

from __future__ import annotations

import importlib.util
import logging.config
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from cli.serving import proxy_options
from core.files import private_home
from core.logs import logging_config
from core.metrics import use_directory
from core.settings import Settings


def serve_api(settings: Settings, host: str, port: int, migrate_warehouse: bool = True) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 2 when the embedded warehouse is held elsewhere. The
    warehouse is migrated first unless `migrate_warehouse` is off (a deployment's `migrate` step did it)."""
    import uvicorn

    from api.app import create_app
    from controlplane import get_engine
    from pipelines.pollers.scheduler import last_poll_at
    from warehouse.client import WarehouseLocked, get_client, ping
    from warehouse.migrate import migrate

    private_home(settings)
    use_directory(settings.metrics_path)
    logging.config.dictConfig(logging_config("INFO"))
    try:
        client = get_client(settings)
    except WarehouseLocked as exc:
        print(f"joulestream api: {exc}", file=sys.stderr)
        return 2
    if migrate_warehouse:
        migrate(client, settings.ch_database, cluster=settings.ch_cluster or None)
    engine = get_engine(settings.database)
    app = create_app(
        settings,
        engine=engine,
        warehouse_client_factory=lambda: get_client(settings),
        warehouse_check=lambda: ping(get_client(settings)),
        last_poll=lambda: last_poll_at(engine),
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
        **proxy_options(settings),
    )
    return 0


def register_server_commands(
    app: typer.Typer,
    settings: Callable[[], Settings],
    preflight: Callable[..., None],
    migrate_controlplane: Callable[[Settings], Any],
) -> None:
    """Add `topics` and `api` to the main app (its settings loader, start-up check and control-plane migration)."""
    console = Console()

    @app.command()
    def topics(
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker")] = 60.0,
    ) -> None:
        """Create the pipeline topics (JOULESTREAM_KAFKA_PARTITIONS partitions, JOULESTREAM_KAFKA_REPLICATION
        replicas) if missing: the topic-creation step of a deployment (docker-compose's `kafka-init`)."""
        import asyncio

        from core.kafka import ensure_topics, topic_names

        s = settings()
        created = asyncio.run(ensure_topics(s, timeout_s=timeout))
        for t in topic_names(s):
            detail = f"created ({s.kafka_partitions} partitions, replication {s.kafka_replication})"
            console.print(f"{t}: {detail if t in created else 'exists'}")

    @app.command()
    def api(
        host: str = "127.0.0.1",
        port: int = 8787,
        migrate: Annotated[
            bool, typer.Option("--migrate/--no-migrate", help="Migrate the control plane and warehouse first")
        ] = True,
    ) -> None:
        """Serve the dashboard API (/api/v1, /health, /prometheus/metrics) alone, over a ClickHouse server
        (server mode). With the embedded warehouse, `joulestream worker --http-port` serves the API instead."""
        s = settings()
        preflight("api", s, ports={"--port": port}, host=host)
        if migrate:
            migrate_controlplane(s)
        raise typer.Exit(serve_api(s, host, port, migrate_warehouse=migrate))
