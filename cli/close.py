"""`joulestream close-month` and `joulestream credits …` (the monthly close from the command line).

Mounted on the main app by `register_close_commands(app)`. `close-month` runs the same Dagster job as the
schedule (in this process, `execute_in_process`), whether or not `joulestream up` is running: when `up` holds
the embedded warehouse, the job's warehouse resource asks it over loopback HTTP (docs/monthly-close.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
credits_app = typer.Typer(
    help="Carbon-credit inventory: load a registry CSV, list blocks.", no_args_is_help=True
)

STEPS = ("prepare", "totals", "retire", "receipt", "audit pack")


def close_month(month: str, org: str | None = None, cutoff: str | None = None) -> int:
    """Run the monthly close for `month` (YYYY-MM) with a progress bar; returns an exit code."""
    from controlplane import Orgs, get_engine, upgrade
    from controlplane.billing import BillingPeriods, Receipts, parse_month
    from controlplane.errors import Invalid
    from core.settings import load_settings
    from orchestration.definitions import run_close
    from orchestration.progress import listening

    try:
        key, _, _ = parse_month(month)
    except Invalid as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = load_settings()
    engine = get_engine(settings.database)
    upgrade(engine)  # the close's Dagster resources expect a migrated database
    progress = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    tasks: dict[str, int] = {}

    def on_progress(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = progress.add_task(step, total=max(total, 1))
        progress.update(tasks[step], completed=done if total else 1, total=max(total, 1))

    with progress, listening(on_progress):
        result = run_close(key, org=org, cutoff=cutoff, raise_on_error=False, log_level="ERROR")
    table = Table(title=f"monthly close {key}")
    for col in ("org", "status", "CO2e kg", "upper bound kg", "receipt", "error"):
        table.add_column(col)
    orgs = {o.id: o.slug for o in Orgs(engine).list()}
    receipts = Receipts(engine)
    for p in BillingPeriods(engine).list(month=key):
        if org and org not in (p.org_id, orgs.get(p.org_id)):
            continue
        r = receipts.for_period(p.id)
        table.add_row(
            orgs.get(p.org_id, p.org_id),
            p.status,
            f"{p.co2_kg:,.6f}" if p.co2_kg is not None else "",
            f"{p.co2_kg_high:,.6f}" if p.co2_kg_high is not None else "",
            r.serial_number if r else "",
            (p.error or "")[:60],
        )
    console.print(table)
    if not result.success:
        for ev in result.all_events:
            if ev.is_step_failure and ev.step_failure_data:
                console.print(f"[red]{ev.step_key}[/]: {ev.step_failure_data.error.message.strip()[:500]}")
        console.print("[red]the close failed[/] (re-run the same command: every step is idempotent)")
        return 1
    console.print(f"[green]{key} closed[/]")
    return 0


def credits_load(path: Path) -> tuple[int, int]:
    from controlplane import get_engine, upgrade
    from controlplane.billing import Credits
    from core.settings import load_settings

    engine = get_engine(load_settings().database)
    upgrade(engine)
    return Credits(engine).load_csv(path.read_text(encoding="utf-8-sig"))


@credits_app.command("load")
def credits_load_command(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="CSV: registry,serial_block,project,vintage,tonnes"),
    ],
) -> None:
    """Load credit blocks from a registry CSV (idempotent; overlapping serial ranges are rejected)."""
    from controlplane.errors import ControlPlaneError

    try:
        added, present = credits_load(file)
    except ControlPlaneError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"{added} block(s) loaded, {present} already present")


@credits_app.command("list")
def credits_list() -> None:
    """The inventory: blocks, tonnes, allocated tonnes."""
    from controlplane import get_engine, upgrade
    from controlplane.billing import Credits
    from core.settings import load_settings

    engine = get_engine(load_settings().database)
    upgrade(engine)
    table = Table()
    for col in ("registry", "serial block", "project", "vintage", "tonnes", "allocated"):
        table.add_column(col)
    for b in Credits(engine).blocks():
        table.add_row(
            b.registry, b.serial_block, b.project, str(b.vintage), str(b.tonnes), str(b.allocated_tonnes)
        )
    console.print(table)


def register_close_commands(app: typer.Typer) -> None:
    @app.command("close-month")
    def close_month_command(
        month: Annotated[str, typer.Argument(help="The month to close, YYYY-MM (e.g. 2026-10)")],
        org: Annotated[str | None, typer.Option(help="Close only this org (id or slug)")] = None,
        cutoff: Annotated[
            str | None,
            typer.Option(help="ingested_at cutoff (ISO-8601) for periods without one; default now"),
        ] = None,
    ) -> None:
        """Run the monthly close (the Dagster job, in this process): totals, credits, receipts, audit packs."""
        raise typer.Exit(close_month(month, org, cutoff))

    app.add_typer(
        credits_app, name="credits", help="Carbon-credit inventory: load a registry CSV, list blocks."
    )
