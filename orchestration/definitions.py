"""The Dagster code location: `dagster dev -m orchestration`.

Assets (group `monthly_close`, monthly partitions "YYYY-MM-01"): close_totals → credit_retirement →
receipts → audit_packs, materialized by the job `monthly_close`. The per-org state lives in the control
plane (billing periods, allocations, receipts), so each asset reads what the previous one recorded and any
step can be re-run on its own.

Run tags: `joulestream/org` (an org id or slug: close only that org), `joulestream/cutoff` (ISO-8601: the
`ingested_at` cutoff to record on periods that have none yet; default: the run's start).

Schedule: `monthly_close_schedule`, 03:00 UTC on the 3rd of each month, for the previous month.
Sensor: `closing_periods_sensor` launches the close of every period that has been `closing` for 48 h
(Stripe's invoice.payment_succeeded puts periods there), one run per period.
"""

from datetime import timedelta
from typing import Any

import dagster as dg

from orchestration.close import CloseService, StepResult, month_of_partition, parse_cutoff
from orchestration.progress import report
from orchestration.resources import (
    ArtifactsResource,
    ControlPlaneResource,
    SigningResource,
    StripeResource,
    WarehouseResource,
    resource_settings,
)

START_MONTH = "2025-01-01"
ORG_TAG = "joulestream/org"
CUTOFF_TAG = "joulestream/cutoff"
CLOSING_DELAY = timedelta(hours=48)

monthly = dg.MonthlyPartitionsDefinition(start_date=START_MONTH, timezone="UTC")


def _service(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    controlplane: ControlPlaneResource,
    artifacts: ArtifactsResource,
    signing: SigningResource,
) -> CloseService:
    def progress(step: str, done: int, total: int) -> None:
        report(step, done, total)

    return CloseService(
        engine=controlplane.engine(),
        reader_factory=warehouse.reader,
        store=artifacts.store(),
        keyring_factory=signing.keyring,
        public_url=resource_settings(warehouse.home).public_url,
        progress=progress,
    )


def _tags(context: dg.AssetExecutionContext) -> tuple[str | None, Any]:
    tags = context.run.tags
    return tags.get(ORG_TAG) or None, parse_cutoff(tags.get(CUTOFF_TAG))


def _result(
    context: dg.AssetExecutionContext, step: str, res: StepResult, **meta: Any
) -> dg.MaterializeResult:
    for pid, err in res.failed.items():
        context.log.error(f"{step} failed for period {pid}: {err}")
    if res.failed:
        raise dg.Failure(
            description=f"{step}: {len(res.failed)} period(s) failed",
            metadata={"failed": dg.MetadataValue.json(res.failed)},
        )
    return dg.MaterializeResult(metadata={"periods": len(res.done), "skipped": len(res.skipped), **meta})


@dg.asset(partitions_def=monthly, group_name="monthly_close", kinds={"python", "clickhouse"})
def close_totals(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    controlplane: ControlPlaneResource,
    artifacts: ArtifactsResource,
    signing: SigningResource,
) -> dg.MaterializeResult:
    """Per org: the month's totals as of the period's ingested_at cutoff (late events of earlier months as an
    adjustment), frozen on the billing period; the events and calculation breakdown stored for the pack."""
    svc = _service(context, warehouse, controlplane, artifacts, signing)
    month = month_of_partition(context.partition_key)
    org, cutoff = _tags(context)
    prep = svc.prepare(month, org, cutoff)
    periods = svc.to_process(month, org)
    res = svc.totals(periods)
    res.failed.update(prep.failed)
    context.log.info(f"{month}: {len(periods)} period(s); warehouse via {svc.reader.mode}")
    return _result(context, "totals", res, warehouse_mode=svc.reader.mode)


@dg.asset(partitions_def=monthly, group_name="monthly_close", deps=[close_totals], kinds={"python"})
def credit_retirement(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    controlplane: ControlPlaneResource,
    artifacts: ArtifactsResource,
    signing: SigningResource,
) -> dg.MaterializeResult:
    """Paid orgs: credit serials from the inventory covering each period's CO2e upper bound."""
    svc = _service(context, warehouse, controlplane, artifacts, signing)
    month = month_of_partition(context.partition_key)
    org, _ = _tags(context)
    return _result(context, "retire", svc.retire(svc.to_process(month, org)))


@dg.asset(
    partitions_def=monthly, group_name="monthly_close", deps=[credit_retirement], kinds={"python", "pdf"}
)
def receipts(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    controlplane: ControlPlaneResource,
    artifacts: ArtifactsResource,
    signing: SigningResource,
) -> dg.MaterializeResult:
    """Signed receipts CL-YYYYMM-NNNNN (Ed25519) and their PDFs."""
    svc = _service(context, warehouse, controlplane, artifacts, signing)
    month = month_of_partition(context.partition_key)
    org, _ = _tags(context)
    return _result(context, "receipt", svc.receipt(svc.to_process(month, org)))


@dg.asset(partitions_def=monthly, group_name="monthly_close", deps=[receipts], kinds={"python"})
def audit_packs(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    controlplane: ControlPlaneResource,
    artifacts: ArtifactsResource,
    signing: SigningResource,
) -> dg.MaterializeResult:
    """Audit pack zips with a signed manifest; the periods are then closed."""
    svc = _service(context, warehouse, controlplane, artifacts, signing)
    month = month_of_partition(context.partition_key)
    org, _ = _tags(context)
    return _result(context, "audit pack", svc.audit_pack(svc.to_process(month, org)))


monthly_close_job = dg.define_asset_job(
    "monthly_close",
    selection=dg.AssetSelection.groups("monthly_close"),
    description="Monthly close: totals, credit retirement, signed receipts, audit packs.",
    executor_def=dg.in_process_executor,  # one process: the embedded warehouse has a single holder
)

monthly_close_schedule = dg.build_schedule_from_partitioned_job(
    monthly_close_job, day_of_month=3, hour_of_day=3, minute_of_hour=0, name="monthly_close_schedule"
)


@dg.sensor(job=monthly_close_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING)
def closing_periods_sensor(context: dg.SensorEvaluationContext, controlplane: ControlPlaneResource):
    """Periods in `closing` for 48 h (after Stripe's invoice.payment_succeeded) → a close run each."""
    from controlplane.billing import BillingPeriods

    periods = BillingPeriods(controlplane.engine()).due_closing(CLOSING_DELAY)
    if not periods:
        return dg.SkipReason("no period has been closing for 48 h")
    return [
        dg.RunRequest(
            run_key=f"close-{p.id}-{p.closing_since.isoformat() if p.closing_since else ''}",
            partition_key=f"{p.month}-01",
            tags={ORG_TAG: p.org_id},
        )
        for p in periods
    ]


def resources(**overrides: Any) -> dict[str, Any]:
    base = {
        "warehouse": WarehouseResource(),
        "controlplane": ControlPlaneResource(),
        "artifacts": ArtifactsResource(),
        "signing": SigningResource(),
        "stripe": StripeResource(),
    }
    base.update(overrides)
    return base


def build_defs(**resource_overrides: Any) -> dg.Definitions:
    """The code location's Definitions, with some resources replaced (tests, `joulestream close-month`)."""
    return dg.Definitions(
        assets=[close_totals, credit_retirement, receipts, audit_packs],
        jobs=[monthly_close_job],
        schedules=[monthly_close_schedule],
        sensors=[closing_periods_sensor],
        resources=resources(**resource_overrides),
    )


def run_close(
    month: str,
    org: str | None = None,
    cutoff: str | None = None,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
    log_level: str | None = None,
    **resource_overrides: Any,
) -> dg.ExecuteInProcessResult:
    """Run the monthly_close job for `month` ("2026-10") in this process."""
    tags = {k: v for k, v in ((ORG_TAG, org), (CUTOFF_TAG, cutoff)) if v}
    job = build_defs(**resource_overrides).resolve_job_def("monthly_close")
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}} if log_level else None
    return job.execute_in_process(
        run_config=run_config,
        partition_key=f"{month[:7]}-01",
        tags=tags,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


defs = build_defs()
