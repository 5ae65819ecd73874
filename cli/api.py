"""`joulestream api` (cli/main.py): the dashboard API as its own process (server mode, docs/deployment.md).

It reads a ClickHouse server (`JOULESTREAM_CLICKHOUSE=http://…`) that the sink workers write; any number of
replicas can run behind a load balancer (their public rate limit shares `JOULESTREAM_RATE_LIMIT_STORAGE`).
With the embedded warehouse (chdb) only one process may hold the warehouse: the worker started with
`--http-port` serves this same API there, and this command refuses to start while another process holds it.
"""

from __future__ import annotations

import importlib.util
import logging.config
import sys

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
