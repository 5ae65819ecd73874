"""GPU telemetry commands: `joulestream gpu-targets add|list|delete`, `joulestream scrape` and
`joulestream calibration` (docs/measured-energy.md).

`joulestream up` runs the scraper inside the runtime (cli/embedded.py); `joulestream scrape` runs it as its
own process (or one round with `--once`). Registered on the main app by `register_telemetry_commands(app)`.
"""

from __future__ import annotations

import asyncio
import json
import logging.config
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import ValidationError

from cli.controlplane import _engine, _fail, _org_id, _ts
from controlplane import NotFound
from controlplane.gpu_targets import GpuTargetIn, GpuTargets
from core.logs import logging_config
from core.settings import Settings, load_settings

targets_app = typer.Typer(
    help="GPU telemetry targets: DCGM exporter + model servers (or Prometheus) per workload.",
    no_args_is_help=True,
)


@targets_app.command("add")
def targets_add(
    org: Annotated[str, typer.Option("--org", help="Organization slug")],
    name: Annotated[str, typer.Option("--name", help="A label, e.g. the node or deployment")],
    provider: Annotated[str, typer.Option("--provider", help="Where the GPUs run: aws, azure, google, …")],
    dcgm_url: Annotated[str | None, typer.Option("--dcgm-url", help="DCGM exporter metrics URL")] = None,
    server_url: Annotated[
        list[str] | None, typer.Option("--server-url", help="A model server's /metrics (repeatable)")
    ] = None,
    prometheus_url: Annotated[
        str | None, typer.Option("--prometheus-url", help="A Prometheus server instead of the two above")
    ] = None,
    gpu: Annotated[list[str] | None, typer.Option("--gpu", help="GPU UUID or index (repeatable)")] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", help="Only this Hostname label")] = None,
    region: Annotated[str | None, typer.Option("--region")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Project id (default: Default)")] = None,
) -> None:
    """Register a target; prints its id."""
    engine = _engine()
    org_id = _org_id(engine, org)
    try:
        spec = GpuTargetIn(
            name=name,
            project_id=project,
            dcgm_url=dcgm_url,  # type: ignore[arg-type]
            server_urls=server_url or [],  # type: ignore[arg-type]
            prometheus_url=prometheus_url,  # type: ignore[arg-type]
            gpus=gpu or [],
            hostname=hostname,
            provider=provider,
            region=region,
        )
        target = GpuTargets(engine).create(org_id, spec)
    except ValidationError as exc:
        raise _fail("; ".join(e["msg"] for e in exc.errors()), 2) from None
    except NotFound as exc:
        raise _fail(str(exc)) from None
    typer.echo(target.id)


@targets_app.command("list")
def targets_list(
    org: Annotated[str, typer.Option("--org", help="Organization slug")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    engine = _engine()
    targets = GpuTargets(engine).list(_org_id(engine, org))
    if as_json:
        typer.echo(json.dumps([t.model_dump(mode="json") for t in targets], indent=2))
        return
    for t in targets:
        source = t.prometheus_url or f"{t.dcgm_url} + {len(t.server_urls)} server(s)"
        typer.echo(
            f"{t.id}  {t.name}  {t.provider}/{t.region or '-'}  {source}  last scrape {_ts(t.last_scrape_at)}"
            + (f"  error: {t.last_error}" if t.last_error else "")
        )


@targets_app.command("delete")
def targets_delete(
    org: Annotated[str, typer.Option("--org", help="Organization slug")],
    target_id: Annotated[str, typer.Argument(help="Target id")],
) -> None:
    """Stop scraping a target (its measured events stay)."""
    engine = _engine()
    try:
        GpuTargets(engine).delete(_org_id(engine, org), target_id)
    except NotFound as exc:
        raise _fail(str(exc)) from None


def scrape(settings: Settings, *, once: bool, loglevel: str = "INFO") -> int:
    """Run the scraper until SIGINT/SIGTERM, or one round with `once` (exit 1 when a target failed)."""
    from cli.poll import stop_on_signals, with_producer
    from pipelines.telemetry.scheduler import TelemetryScraper, run_telemetry

    logging.config.dictConfig(logging_config(loglevel.upper()))
    engine = _engine()

    async def main(prod) -> int:
        if not once:
            await run_telemetry(settings, engine, prod, stop_on_signals())
            return 0
        s = TelemetryScraper(settings, engine, prod)
        try:
            results = await s.run_once()
        finally:
            await s.aclose()
        for r in results:
            print(
                f"{r.target_id}  {r.outcome:<9} samples={r.samples} resets={r.resets} "
                f"published={r.published} unchanged={r.unchanged}"
                + (f" unattributed_j={r.unattributed_j:g}" if r.unattributed_j else "")
                + (f"  error={r.error}" if r.error else "")
            )
        return 1 if any(r.outcome != "ok" for r in results) else 0

    return asyncio.run(with_producer(settings, "scrape", main))


def _calibration_rows(settings: Settings, org_id: str, start: datetime, end: datetime) -> list[dict]:
    """Read here, or asked of the runtime that holds the embedded warehouse (as `joulestream totals`)."""
    from api.internal import calibration_payload
    from warehouse.runtime import RuntimeInfo, WarehouseUnreachable, ask, open_or_ask

    try:
        target = open_or_ask(settings)
    except WarehouseUnreachable as exc:
        raise typer.BadParameter(str(exc)) from exc
    if isinstance(target, RuntimeInfo):
        params = {"org_id": org_id, "start": start.isoformat(), "end": end.isoformat()}
        return ask(target, "/internal/v1/calibration", **params).json()
    return calibration_payload(target, org_id, start, end)


def register_telemetry_commands(app: typer.Typer) -> None:
    app.add_typer(targets_app, name="gpu-targets", help="GPU telemetry targets (measured energy).")

    @app.command("scrape")
    def scrape_command(
        once: Annotated[bool, typer.Option(help="Scrape every target once, then exit")] = False,
        loglevel: str = "INFO",
    ) -> None:
        """Scrape the GPU telemetry targets and publish measured energy (long-running)."""
        raise typer.Exit(scrape(load_settings(), once=once, loglevel=loglevel))

    @app.command("calibration")
    def calibration_command(
        org: Annotated[str, typer.Option("--org", help="Organization slug")],
        start: Annotated[str, typer.Option(help="ISO 8601 start (UTC)")],
        end: Annotated[str | None, typer.Option(help="ISO 8601 end (UTC; default now)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    ) -> None:
        """Measured vs estimated J per token, per model (IT boundary)."""
        try:
            t0 = datetime.fromisoformat(start)
            t1 = datetime.fromisoformat(end) if end else datetime.now(UTC)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        t0, t1 = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (t0, t1))
        settings = load_settings()
        rows = _calibration_rows(settings, _org_id(_engine(), org), t0, t1)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        typer.echo(
            f"{'model':<40} {'tokens':>12} {'measured J/tok':>15} {'estimated J/tok':>16} {'ratio':>7}"
        )
        for r in rows:
            m, e, ratio = r["measured_j_per_token"], r["estimated_j_per_token"], r["ratio"]
            typer.echo(
                f"{r['model'][:40]:<40} {r['tokens']:>12,} {m if m is None else f'{m:.4f}':>15} "
                f"{e if e is None else f'{e:.4f}':>16} {ratio if ratio is None else f'{ratio:.2f}':>7}"
            )
