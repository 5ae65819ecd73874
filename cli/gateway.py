"""`joulestream gateway` (cli/main.py): serve the inference gateway (pipelines/gateway) with uvicorn."""

from __future__ import annotations

import gc
import importlib.util
import logging.config
import sys
from pathlib import Path

from cli.serving import proxy_options
from core.files import private_home
from core.logs import logging_config
from core.metrics import use_directory
from core.settings import load_settings


def gateway(host: str = "127.0.0.1", port: int = 8788, routes_file: str | Path = "routes.yaml") -> None:
    """Serve the gateway until SIGINT/SIGTERM (graceful: in-flight requests finish, queued usage events
    are sent to Kafka or spooled, pending receipts are stored). Blocks."""
    import uvicorn

    from pipelines.gateway import create_gateway_app, load_routes

    settings = load_settings()
    private_home(settings)
    use_directory(settings.metrics_path)  # its /prometheus/metrics answers for this process
    logging.config.dictConfig(logging_config("INFO"))
    app = create_gateway_app(settings, load_routes(routes_file))
    # Tail latency: background threads (receipt signing/storing, SQL) hand the GIL back to the event loop
    # after 1 ms instead of Python's default 5 ms, and the start-up objects are moved out of the garbage
    # collector's reach so full collections stay short.
    sys.setswitchinterval(0.001)
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        **proxy_options(settings),
    )
