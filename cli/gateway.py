"""`joulestream gateway`: serve the inference gateway (pipelines/gateway) with uvicorn.

The lead mounts it in cli/main.py as:

    @app.command()
    def gateway(
        host: str = "127.0.0.1",
        port: int = 8788,
        routes: Annotated[Path, typer.Option(help="Routing file (YAML)")] = Path("routes.yaml"),
    ) -> None:
        '''Run the OpenAI-compatible inference gateway.'''
        from cli.gateway import gateway as run_gateway

        run_gateway(host, port, routes)
"""

from __future__ import annotations

import importlib.util
import logging.config
from pathlib import Path

from core.logs import logging_config
from core.settings import load_settings


def gateway(host: str = "127.0.0.1", port: int = 8788, routes_file: str | Path = "routes.yaml") -> None:
    """Serve the gateway until SIGINT/SIGTERM (graceful: in-flight requests finish, queued usage events
    are sent to Kafka or spooled, pending receipts are stored). Blocks."""
    import uvicorn

    from pipelines.gateway import create_gateway_app, load_routes

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    logging.config.dictConfig(logging_config("INFO"))
    app = create_gateway_app(settings, load_routes(routes_file))
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
