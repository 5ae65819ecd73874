"""`joulestream batch …` (cli/main.py): run the Batch API's runner as its own process, and load the hourly
grid-intensity profiles it schedules with (docs/batch.md)."""

from __future__ import annotations

import asyncio
import logging.config
import signal
from pathlib import Path

from core.files import private_home
from core.logs import logging_config
from core.settings import Settings, load_settings


def run_batch_runner(routes_file: str | Path, spool: Path | None = None, lease_s: float = 60.0) -> None:
    """Run batches until SIGINT/SIGTERM (the chunk in flight finishes, its usage events are sent or spooled).
    The runner books through its own gateway instance (no HTTP server): its usage spool is `spool`
    (default `home/batch-runner/spool`; one per runner process — a restarted runner replays it). Blocks."""
    from core.artifacts import open_store
    from pipelines.gateway import create_gateway_app, load_routes
    from pipelines.gateway.batch_runner import BatchRunner

    settings = load_settings()
    private_home(settings)
    logging.config.dictConfig(logging_config("INFO"))
    app = create_gateway_app(
        settings, load_routes(routes_file), spool_dir=spool or settings.home / "batch-runner" / "spool"
    )
    gw = app.state.gateway
    runner = BatchRunner(gw, open_store(settings), lease_s=lease_s)

    async def main() -> None:
        await gw.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.request_stop)
        try:
            await runner.run_forever()
        finally:
            await gw.stop()

    asyncio.run(main())


def load_profiles(settings: Settings, path: Path) -> list[str]:
    """Load an intensity-profile CSV into the control plane; returns the regions loaded."""
    from controlplane import get_engine
    from controlplane.batches import IntensityProfiles
    from core.intensity import parse_profile_csv

    profiles = parse_profile_csv(path.read_text(encoding="utf-8"))
    IntensityProfiles(get_engine(settings.database)).load(profiles)
    return [p.region for p in profiles]
