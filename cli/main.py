"""`joulestream`: the operator command line."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.broker import EmbeddedBroker
from cli.controlplane import factors_app, keys_app, orgs_app, users_app
from core.files import PRIVATE_UMASK, private_dir, private_home
from core.methodology import joules_to_kwh
from core.settings import Settings, load_settings

app = typer.Typer(help="joulestream — energy and carbon accounting for AI inference.", no_args_is_help=True)
app.add_typer(orgs_app, name="orgs", help="Organizations (tenants).")
app.add_typer(keys_app, name="keys", help="API keys: create (shown once), list, revoke.")
app.add_typer(factors_app, name="factors", help="Carbon factor versions: publish, list.")
app.add_typer(users_app, name="users", help="Users who sign in with email and password: create.")
console = Console()


@app.callback()
def _private_files() -> None:
    """Every file and directory a joulestream command creates is its owner's only (core/files.py)."""
    os.umask(PRIVATE_UMASK)


def _settings() -> Settings:
    """The settings of this command; an invalid variable ends it with status 2."""
    try:
        return load_settings()
    except ValidationError as exc:
        console.print(f"[red]invalid configuration:[/] {exc}")
        raise typer.Exit(2) from None


def _kafka_port(s: Settings) -> int:
    return int(s.kafka.split(",")[0].rsplit(":", 1)[1])


def _preflight(command: str, s: Settings, **checks: Any) -> None:
    """The start-up check (cli/preflight.py): every problem at once, status 2, before anything starts."""
    from cli.preflight import check

    problems = check(s, **checks)
    if problems:
        console.print(
            f"[red]joulestream {command}: cannot start, {len(problems)} configuration problem(s):[/]",
            highlight=False,
        )
        for p in problems:
            console.print(f"  - {p}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)


def _run_stack(command: str, **kwargs: Any) -> None:
    """`run_worker`; a crash of any part ends the command with status 1 and the reason on the console."""
    from cli.embedded import StackCrashed, run_worker

    try:
        run_worker(**kwargs)
    except StackCrashed as exc:
        console.print(f"[red]joulestream {command} stopped: {exc}[/]", highlight=False, soft_wrap=True)
        console.print("  (details in the log)", highlight=False)
        raise typer.Exit(1) from None


@app.command()
def broker(
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1 (default: from JOULESTREAM_KAFKA)")
    ] = None,
) -> None:
    """Run the embedded Kafka broker (Tansu, memory storage) on loopback until Ctrl-C or SIGTERM."""
    s = _settings()
    stop = threading.Event()
    received: list[int] = []

    def _on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    # handlers before the child starts: a SIGTERM/SIGINT at any moment from here on stops the broker too
    # (and the child, bound to this process's life, dies with it if this process is killed outright)
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    b = EmbeddedBroker(port or _kafka_port(s))
    try:
        try:
            b.start()
        except (RuntimeError, TimeoutError) as exc:
            console.print(f"[red]joulestream broker:[/] {exc}")
            raise typer.Exit(1) from None
        console.print(f"Kafka (Tansu) listening on [bold]{b.bootstrap}[/] — Ctrl-C to stop")
        while not stop.wait(0.5):
            if b.proc is not None and b.proc.poll() is not None:
                console.print(f"[red]the broker (Tansu) exited with status {b.proc.returncode}[/]")
                raise typer.Exit(1)
    finally:
        b.stop()  # SIGTERM to the broker's process group, SIGKILL after 5 s
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _migrate_controlplane(s: Settings) -> tuple[str | None, str]:
    """Migrate the control-plane database to the newest revision; (revision before, revision after)."""
    from controlplane import current_revision, get_engine, head_revision, upgrade

    private_home(s)  # the home (0700) exists before anything is created in it
    engine = get_engine(s.database)
    before = current_revision(engine)
    upgrade(engine)
    return before, head_revision()


@app.command()
def migrate() -> None:
    """Apply the control-plane and warehouse migrations (idempotent)."""
    from warehouse.client import get_client
    from warehouse.migrate import migrate as run_migrations

    s = _settings()
    before, after = _migrate_controlplane(s)
    console.print(
        f"control plane: at revision {after}" + (f" (was {before or 'empty'})" if before != after else "")
    )
    applied = run_migrations(get_client(s), s.ch_database, cluster=s.ch_cluster or None)
    console.print(
        f"warehouse {s.ch_database}: {len(applied)} migration(s) applied"
        + (f": {', '.join(applied)}" if applied else "")
    )


@app.command()
def worker(
    http_port: Annotated[
        int | None, typer.Option(help="Serve the runtime HTTP API on 127.0.0.1:PORT")
    ] = None,
    loglevel: str = "INFO",
    split: Annotated[
        bool,
        typer.Option("--split/--single-process", help="Run the enrich agent in a second process (2 cores)"),
    ] = True,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Without --http-port: serve /prometheus/metrics alone on 127.0.0.1:PORT"),
    ] = None,
    stage: Annotated[
        str,
        typer.Option(
            help="all | enrich | sink: both agents, or one (enrich workers hold no warehouse; docs/deployment.md)"
        ),
    ] = "all",
    migrate: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Migrate the control plane first")
    ] = True,
    metrics_host: Annotated[
        str, typer.Option(help="Address of the --metrics-port server (0.0.0.0 in a container)")
    ] = "127.0.0.1",
) -> None:
    """Run the stream worker: enrich (raw → enriched) and sink (enriched → ClickHouse) agents."""
    if stage not in ("all", "enrich", "sink"):
        raise typer.BadParameter(f"--stage must be all, enrich or sink, not {stage!r}")
    if stage == "enrich" and http_port is not None:
        raise typer.BadParameter("--http-port serves the warehouse: not with --stage enrich")
    s = _settings()
    _preflight("worker", s, ports={"--http-port": http_port} if http_port else None)
    if migrate:
        _migrate_controlplane(s)
    _run_stack(
        "worker",
        settings=s,
        http_port=http_port,
        loglevel=loglevel.upper(),
        split=split,
        metrics_port=metrics_port,
        stage=stage,
        metrics_host=metrics_host,
    )


@app.command()
def gateway(
    host: str = "127.0.0.1",
    port: int = 8788,
    routes: Annotated[
        Path, typer.Option(help="Routing file (YAML); see pipelines/gateway/routes.example.yaml")
    ] = Path("routes.yaml"),
) -> None:
    """Run the OpenAI-compatible inference gateway (energy headers, signed receipts, usage to Kafka)."""
    from cli.gateway import gateway as run_gateway

    s = _settings()
    _preflight("gateway", s, routes=routes, ports={"--port": port}, host=host)
    _migrate_controlplane(s)
    run_gateway(host, port, routes)


batch_app = typer.Typer(
    help="Batch API: the runner process and the hourly intensity profiles (docs/batch.md)."
)
app.add_typer(batch_app, name="batch")


@batch_app.command("run")
def batch_run(
    routes: Annotated[Path, typer.Option(help="Routing file (YAML), the gateway's")] = Path("routes.yaml"),
    spool: Annotated[
        Path | None, typer.Option(help="Usage spool of this runner (default home/batch-runner/spool)")
    ] = None,
    lease_s: Annotated[
        float, typer.Option(help="Seconds a claimed batch stays this runner's without renewal")
    ] = 60.0,
) -> None:
    """Run the batch runner (batches through the gateway's routing, budgets, metering and receipts)."""
    from cli.batch import run_batch_runner

    s = _settings()
    _preflight("batch run", s, routes=routes)
    _migrate_controlplane(s)
    run_batch_runner(routes, spool, lease_s)


@batch_app.command("profile-load")
def batch_profile_load(
    path: Annotated[
        Path, typer.Argument(help="CSV: region,hour_utc,intensity_kg_per_kwh (24 hours a region)")
    ],
) -> None:
    """Load hourly grid-intensity profiles (replaces the regions the file names)."""
    from cli.batch import load_profiles
    from core.intensity import ProfileError

    s = _settings()
    _migrate_controlplane(s)
    try:
        regions = load_profiles(s, path)
    except (ProfileError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"loaded {len(regions)} region(s): {', '.join(regions)}")


@app.command()
def poll(
    once: Annotated[bool, typer.Option(help="Poll every due connection once, then exit")] = False,
    interval: Annotated[
        float | None, typer.Option(help="Seconds between polls of a connection (default 3600)")
    ] = None,
    loglevel: str = "INFO",
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /prometheus/metrics on METRICS_HOST:PORT while polling")
    ] = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Poll the providers' usage APIs for every active connection (long-running)."""
    from cli.poll import poll as run_poll

    settings = _settings()
    _preflight("poll", settings, needs_secrets=True)
    _migrate_controlplane(settings)
    raise typer.Exit(
        run_poll(
            settings,
            once=once,
            interval_s=interval,
            loglevel=loglevel,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )
    )


@app.command()
def simulate(
    events: Annotated[int, typer.Argument(help="Number of messages to publish")] = 10_000,
    orgs: int = 3,
    projects: int = 2,
    days: int = 7,
    duplicates: Annotated[float, typer.Option(help="Share of exact re-sends")] = 0.05,
    revisions: Annotated[float, typer.Option(help="Share of later, higher revisions")] = 0.02,
    invalid: Annotated[float, typer.Option(help="Share of invalid messages (they go to the DLQ)")] = 0.01,
    seed: int = 7,
) -> None:
    """Publish labelled synthetic usage to usage.raw.v1."""
    from pipelines.simulate import generate, run_publish

    s = _settings()
    traffic = generate(
        events,
        orgs=orgs,
        projects=projects,
        days=days,
        duplicate_rate=duplicates,
        revision_rate=revisions,
        invalid_rate=invalid,
        seed=seed,
    )
    with _progress() as progress:
        task = progress.add_task("publishing", total=len(traffic.messages))
        run_publish(s, traffic.messages, lambda done: progress.update(task, completed=done))
    console.print(
        f"published {len(traffic.messages)} messages to {s.raw_topic}: {len(traffic.final)} distinct events, "
        f"{traffic.duplicates} duplicates, {traffic.revisions} revisions, {traffic.invalid} invalid"
    )


@app.command()
def up(
    events: Annotated[int, typer.Option(help="Initial burst of simulated events (past 7 days)")] = 20_000,
    rate: Annotated[float, typer.Option(help="Live simulated events per second afterwards")] = 20.0,
    http_port: int = 8787,
    gateway_routes: Annotated[
        Path | None, typer.Option(help="Gateway routing file (default: a local demo upstream)")
    ] = None,
    upstream_port: Annotated[int, typer.Option(help="Port of the local demo upstream")] = 8790,
    dagster: Annotated[
        bool, typer.Option("--dagster", help="Also run the Dagster webserver + daemon (the monthly close UI)")
    ] = False,
    dagster_port: Annotated[int, typer.Option(help="Port of the Dagster UI (with --dagster)")] = 3000,
) -> None:
    """Start the embedded stack: broker, worker, runtime HTTP, and labelled synthetic traffic. Ends with
    status 2 on a configuration problem (all of them named, before anything starts) and with status 1 when
    any part crashes (the reason on the console)."""
    s = _settings()
    ports = {"--http-port": http_port}
    if gateway_routes is None:
        ports["--upstream-port (the demo upstream)"] = upstream_port
    if dagster:
        ports["--dagster-port (the Dagster UI)"] = dagster_port
    if s.kafka_embedded:
        ports["the embedded broker (JOULESTREAM_KAFKA unset)"] = _kafka_port(s)
    _preflight("up", s, needs_secrets=True, routes=gateway_routes, ports=ports)
    _migrate_controlplane(s)
    log_dir = private_dir(s.home / "logs")
    from cli.dagster_ui import DagsterUI
    from cli.demo import demo_signin_link, ensure_demo_tenant
    from cli.demo_gateway import DemoUpstream

    tenants, demo_key = ensure_demo_tenant(s)
    signin = demo_signin_link(s, next(iter(tenants)))
    s, metrics_token = _demo_metrics_token(s)
    ui = DagsterUI(dagster_port, s.home) if dagster else None
    if ui is not None:
        s = s.replace(dagster_url=ui.url)  # the dashboard links admins to it
    b = upstream = None
    children = {}
    try:
        if s.kafka_embedded:
            b = EmbeddedBroker(_kafka_port(s), log_path=log_dir / "broker.log").start()
            children["the embedded broker (Tansu)"] = b.proc
        if gateway_routes is None:
            upstream = DemoUpstream(upstream_port, s.home)
            gateway_routes = upstream.start()
            children["the demo upstream"] = upstream.proc
        if ui is not None:
            children["the Dagster UI (dagster dev)"] = ui.start()
        banner = [
            "[bold green]joulestream is up[/]",
            f"  Kafka        {s.kafka} ({'embedded Tansu' if b else 'external'}); topics {s.raw_topic}, "
            f"{s.enriched_topic}, {s.dlq_topic}",
            f"  Warehouse    {s.clickhouse} (database {s.ch_database})",
            f"  Dashboard    http://127.0.0.1:{http_port}/  — sign in once with [bold]http://127.0.0.1:{http_port}/app/"
            f"#signin={signin}[/] (demo org, {s.dashboard_signin_link_s // 60} min), or with the demo key",
            f"  Dagster UI   {ui.url}  (the monthly close; starting, ~10 s)"
            if ui
            else "  Dagster UI   not started: [bold]joulestream up --dagster[/] runs it beside the stack",
            f"  API          http://127.0.0.1:{http_port}/api/v1/docs  (health: http://127.0.0.1:{http_port}/health)",
            f"  Demo key     {demo_key}  (org 'demo', scopes read+ingest; shown once)",
            f"  Try          curl -H 'Authorization: Bearer {demo_key}' "
            f"http://127.0.0.1:{http_port}/api/v1/telemetry/summary",
            f'  Gateway      OpenAI base_url http://127.0.0.1:{http_port}/v1 (same key, model "auto"; routes {gateway_routes})',
            f"  Metrics      http://127.0.0.1:{http_port}/prometheus/metrics  (Bearer {metrics_token})",
            f"  Logs         {log_dir / 'worker.log'}",
            "  Totals       in another terminal: [bold].venv/bin/joulestream totals --by model[/]",
            f"  Traffic      {events} simulated events (synthetic=true), then {rate:g}/s live",
        ]
        _run_stack(
            "up",
            settings=s,
            children=children,
            http_port=http_port,
            simulate_initial=events,
            simulate_rate=rate,
            console_banner=banner,
            with_pollers=True,
            gateway_routes=gateway_routes,
            tenants=tenants,
            logfile=str(log_dir / "worker.log"),
        )
    finally:
        if ui:
            ui.stop()
        if upstream:
            upstream.stop()
        if b:
            b.stop()
        console.print("stopped.")


def _demo_metrics_token(s: Settings) -> tuple[Settings, str]:
    """The operator token of /prometheus/metrics: JOULESTREAM_METRICS_TOKEN, else (the quick start) one made
    once and kept in `home/metrics.token`."""
    import secrets

    if s.metrics_token is not None:
        return s, "$JOULESTREAM_METRICS_TOKEN"
    path = s.home / "metrics.token"
    if not path.is_file():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
    token = path.read_text(encoding="utf-8").strip()
    return s.replace(metrics_token=token), token


@app.command()
def totals(
    by: Annotated[str, typer.Option(help="none | org | project | model | day | region")] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Print warehouse totals (asks the running `joulestream up` when it holds the embedded warehouse)."""
    if by not in ("none", "org", "project", "model", "day", "region"):
        raise typer.BadParameter(f"--by must be none, org, project, model, day or region, not {by!r}")
    data = _read_totals(_settings(), by)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    t = data["totals"]
    console.print(
        f"events {t['events']:,}  requests {t['request_count']:,}  tokens {t['total_tokens']:,}  "
        f"energy {joules_to_kwh(t['energy_j']):,.3f} kWh  CO2e {t['co2_kg']:,.4f} kg "
        f"[{t['co2_kg_low']:,.4f} – {t['co2_kg_high']:,.4f}]"
    )
    if data["rows"]:
        table = Table()
        keys = [
            k for k in data["rows"][0] if k in ("org_id", "project_id", "provider", "model", "day", "region")
        ]
        for col in [*keys, "events", "total_tokens", "energy_kwh", "co2_kg"]:
            table.add_column(col, justify="left" if col in keys else "right")
        for r in data["rows"]:
            table.add_row(
                *[str(r[k]) for k in keys],
                f"{r['events']:,}",
                f"{r['total_tokens']:,}",
                f"{joules_to_kwh(r['energy_j']):,.4f}",
                f"{r['co2_kg']:,.5f}",
            )
        console.print(table)


@app.command()
def reenrich(
    factors: Annotated[str, typer.Option("--factors", help="The factor version to apply, e.g. v2.0")],
    since: Annotated[
        str, typer.Option(help="Re-enrich events with bucket_start on or after this date (YYYY-MM-DD)")
    ],
    org: Annotated[str | None, typer.Option(help="Only this org (id or slug)")] = None,
    batch: Annotated[int, typer.Option(min=1, max=50_000, help="Rows per page")] = 5_000,
) -> None:
    """Recompute the ledger rows of open billing periods from their stored raw tokens with another factor
    version (new revisions replace the old; closed periods are refused). See cli/reenrich.py."""
    from datetime import date

    from cli.reenrich import DirectLedger, Refused, RuntimeLedger
    from cli.reenrich import reenrich as run_reenrich
    from controlplane import Orgs, get_engine, upgrade
    from controlplane.factor_resolver import FactorResolver
    from controlplane.prices import PriceLookup
    from warehouse.runtime import RuntimeInfo, WarehouseUnreachable, open_or_ask

    try:
        day = date.fromisoformat(since)
    except ValueError:
        raise typer.BadParameter(f"--since must be a date YYYY-MM-DD, not {since!r}") from None
    s = _settings()
    engine = get_engine(s.database)
    upgrade(engine)
    fs = FactorResolver(engine).version(factors)
    if fs is None:
        raise typer.BadParameter(
            f"no factor version {factors!r}: publish it first (joulestream factors publish)"
        )
    org_id = None
    if org is not None:
        found = Orgs(engine).get(org) or Orgs(engine).get_by_slug(org)
        if found is None:
            raise typer.BadParameter(f"no org {org!r} (id or slug)")
        org_id = found.id
    try:
        target = open_or_ask(s)
    except WarehouseUnreachable as exc:
        raise typer.BadParameter(str(exc)) from exc
    ledger = RuntimeLedger(target) if isinstance(target, RuntimeInfo) else DirectLedger(target)
    progress = _progress()
    task = progress.add_task(f"re-enriching with {fs.version}", total=None)

    def start(total: int) -> None:  # shown once the range is known to be open
        progress.update(task, total=total)
        progress.start()

    try:
        outcome = run_reenrich(
            ledger,
            engine,
            fs,
            day,
            org_id,
            prices=PriceLookup(engine).prices(),
            batch=batch,
            on_start=start,
            on_progress=lambda n: progress.advance(task, n),
        )
    except Refused as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from None
    finally:
        progress.stop()
    console.print(
        f"{outcome.events:,} live events in {len(outcome.months)} org-month(s): {outcome.rewritten:,} re-enriched "
        f"with {fs.version} (old revisions cancelled: {outcome.cancelled:,}), {outcome.unchanged:,} already up to date"
    )


def _read_totals(s: Settings, by: str) -> dict:
    """The totals payload (api/internal.py), read here or asked of the runtime (warehouse/runtime.py)."""
    from api.internal import totals_payload
    from warehouse.runtime import RuntimeInfo, WarehouseUnreachable, ask, open_or_ask

    try:
        target = open_or_ask(s)
    except WarehouseUnreachable as exc:
        raise typer.BadParameter(str(exc)) from exc
    if isinstance(target, RuntimeInfo):
        return ask(target, "/internal/v1/totals", by=by).json()
    return totals_payload(target, by)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


from cli.close import register_close_commands  # noqa: E402 — close-month, credits
from cli.server import register_server_commands  # noqa: E402 — topics, api

register_close_commands(app)

from cli.telemetry import register_telemetry_commands  # noqa: E402 — gpu-targets, scrape, calibration

register_telemetry_commands(app)
register_server_commands(app, _settings, _preflight, _migrate_controlplane)
