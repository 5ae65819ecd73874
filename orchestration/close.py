"""The monthly close, step by step (plain Python; the Dagster assets in `definitions.py` call these).

For one month, per org:

1. `prepare`   — the periods to close: orgs with ledger rows in the month (or late rows since it began), periods
                 already waiting (`closing`, `failed`, or created by Stripe), and closed ones (a re-run
                 regenerates their artefacts). Each goes to `closing` with its `ingested_at` cutoff recorded
                 the first time (default: now).
2. `totals`    — the ledger rows as of the cutoff (`warehouse/close.py`), summed in Python with `math.fsum`
                 (`orchestration/figures.py`: reproducible to the bit); cross-checked against the SQL sums;
                 frozen on the period.
                 The events (Parquet) and the calculation breakdown (JSON) are stored as work artefacts.
3. `retire`    — paid plans: whole-tonne credit serials from the inventory covering the period's CO2e *upper
                 bound* (a conservative claim: the retirement covers the emissions even if the true value is at
                 the top of the uncertainty range).
4. `receipt`   — the signed receipt `CL-YYYYMM-NNNNN` and its PDF.
5. `audit_pack`— the zip (receipt PDF and signed JSON, breakdown, events, methodology, summary, credits, and a
                 signed manifest of every file's SHA-256); the period is then `closed`.

Free-plan orgs get steps 1, 2 and a closed period (no retirement, receipt or pack: those are paid features).
Every step is idempotent and deterministic: a re-run produces the same serials and byte-identical files.

A closed, signed month never changes. Its figures are frozen with the factor versions its events were enriched
with; rows written after its cutoff (late events, re-enriched revisions) are not read by its close. A re-run
by a newer version of this code (e.g. one that computes more figures) checks the frozen figures against the
ledger and keeps them, and keeps the work files and the receipt PDF already stored: the receipt, its PDF and
the audit pack stay what was signed.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from controlplane import FactorVersions, Orgs
from controlplane.billing import (
    BillingPeriods,
    Credits,
    Period,
    Receipts,
    is_paid,
    parse_month,
    verify_url,
)
from controlplane.errors import ControlPlaneError
from core.receipts import Keyring, canonical_json, sha256_hex
from orchestration.figures import compute, cross_check

log = logging.getLogger("joulestream.close")

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
RECEIPT_FIELDS = ("serial_number", "co2_retired_kg", "credit_serial_numbers", "period_start", "period_end")


def _json(obj: Any) -> bytes:
    """Human-readable, deterministic JSON for the pack's files."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def work_key(org_id: str, month: str, name: str) -> str:
    return f"close/{org_id}/{month}/{name}"


def pdf_key(org_id: str, month: str, serial: str) -> str:
    return f"receipts/{org_id}/{month}/{serial}.pdf"


def pack_key(org_id: str, month: str) -> str:
    return f"audit-packs/{org_id}/{month}.zip"


@dataclass
class StepResult:
    done: list[str] = field(default_factory=list)  # period ids that went through the step
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # period id → error


@dataclass
class CloseService:
    engine: Engine
    reader_factory: Callable[[], Any]
    store: Any
    keyring_factory: Callable[[], Keyring]
    public_url: str  # settings.public_url: receipts link to its /public/receipts/verify/{serial}
    progress: Callable[[str, int, int], None] | None = None
    _reader: Any = None
    _keyring: Keyring | None = None

    def __post_init__(self) -> None:
        self.periods = BillingPeriods(self.engine)
        self.credits = Credits(self.engine)
        self.receipts = Receipts(self.engine)
        self.orgs = Orgs(self.engine)

    @property
    def reader(self):
        if self._reader is None:
            self._reader = self.reader_factory()
        return self._reader

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            self._keyring = self.keyring_factory()
        return self._keyring

    def _tick(self, step: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(step, done, total)

    def _each(self, step: str, periods: list[Period], fn: Callable[[Period], bool | None]) -> StepResult:
        res = StepResult()
        self._tick(step, 0, len(periods))
        for i, p in enumerate(periods, start=1):
            try:
                if fn(p) is False:
                    res.skipped.append(p.id)
                else:
                    res.done.append(p.id)
            except Exception as exc:  # one org's failure must not stop the others' close
                log.exception("close step %s failed for org %s %s", step, p.org_id, p.month)
                msg = f"{step}: {type(exc).__name__}: {exc}"
                res.failed[p.id] = msg
                self.periods.mark_failed(p.id, msg)
            self._tick(step, i, len(periods))
        return res

    # ------------------------------------------------------------------------------------------- 1. prepare

    def prepare(self, month: str, org: str | None = None, cutoff: datetime | None = None) -> StepResult:
        key, start, end = parse_month(month)
        end_x = end + timedelta(days=1)
        now = datetime.now(UTC)
        if end_x > now.date() and cutoff is None:
            raise ControlPlaneError(f"{key} has not ended yet: it can be closed from {end_x}")
        cutoff = cutoff or now
        wanted_org = None
        if org:
            o = self.orgs.get(org) or self.orgs.get_by_slug(org)
            if o is None:
                raise ControlPlaneError(f"unknown organization {org!r}")
            wanted_org = o.id
        candidates = set(self.reader.orgs(start, end_x, cutoff))
        candidates |= {p.org_id for p in self.periods.list(month=key)}
        if wanted_org:
            candidates &= {wanted_org}
        res = StepResult()
        known = {o.id for o in self.orgs.list()}
        for unknown in sorted(candidates - known):
            log.warning(
                "usage of org %s in %s: no such organization in the control plane, not billed", unknown, key
            )
        targets = sorted(candidates & known)
        self._tick("prepare", 0, len(targets))
        for i, org_id in enumerate(targets, start=1):
            period = self.periods.ensure(org_id, key)
            try:
                self.periods.begin_close(period.id, cutoff)
                res.done.append(period.id)
            except ControlPlaneError as exc:
                res.failed[period.id] = str(exc)
                self.periods.mark_failed(period.id, str(exc))
            self._tick("prepare", i, len(targets))
        return res

    def to_process(self, month: str, org: str | None = None) -> list[Period]:
        """The month's periods the later steps work on: closing (in progress) and closed (re-run)."""
        key, _, _ = parse_month(month)
        periods = self.periods.list(month=key, statuses=("closing", "closed"))
        if org:
            o = self.orgs.get(org) or self.orgs.get_by_slug(org)
            periods = [p for p in periods if o is not None and p.org_id == o.id]
        return periods

    # ------------------------------------------------------------------------------------------- 2. totals

    def totals(self, periods: list[Period]) -> StepResult:
        return self._each("totals", periods, self._totals_one)

    def _totals_one(self, period: Period) -> None:
        assert period.cutoff is not None, "prepare() records the cutoff"
        start, end_x = period.period_start, period.end_exclusive
        table = self.reader.events(period.org_id, start, end_x, period.cutoff, period.adjustment_from)
        figures, breakdown = compute(table, period)
        sql = self.reader.totals(period.org_id, start, end_x, period.cutoff, period.adjustment_from)
        cross_check(figures, sql)
        work = {"events.parquet": lambda: _parquet(table), "breakdown.json": lambda: _json(breakdown)}
        if period.figures is not None:  # frozen: a re-run keeps them and the files made with them
            check_frozen(period.figures, figures)
            for name, make in work.items():
                if self.store.get(work_key(period.org_id, period.month, name)) is None:
                    self.store.put(work_key(period.org_id, period.month, name), make())
            return
        for name, make in work.items():
            self.store.put(work_key(period.org_id, period.month, name), make())
        self.periods.record_figures(period.id, figures)

    # ------------------------------------------------------------------------------------------- 3. retire

    def retire(self, periods: list[Period]) -> StepResult:
        return self._each("retire", periods, self._retire_one)

    def _retire_one(self, period: Period) -> bool:
        period = self._fresh(period)
        org = self.orgs.get(period.org_id)
        if org is None or not is_paid(org.plan_tier) or not period.figures:
            return False
        tonnes = period.figures["credits_tonnes"]
        if tonnes == 0:
            return False
        self.credits.allocate(period.id, tonnes)
        return True

    # ------------------------------------------------------------------------------------------- 4. receipt

    def receipt(self, periods: list[Period]) -> StepResult:
        return self._each("receipt", periods, self._receipt_one)

    def _receipt_one(self, period: Period) -> bool:
        period = self._fresh(period)
        allocations = self.credits.allocations(period.id)
        if not allocations:
            return False
        figures = period.figures or {}
        serials = [s for a in allocations for s in a.serials]

        def build(serial: str) -> tuple[dict, dict]:
            payload = {
                "serial_number": serial,
                "co2_retired_kg": figures["co2_retired_kg"],
                "credit_serial_numbers": serials,
                "period_start": period.period_start.isoformat(),
                "period_end": period.period_end.isoformat(),
            }
            rec = self.keyring.sign(payload)
            pub = self.keyring.public_key(rec.key_version)
            import base64

            return payload, {
                "canonical": canonical_json(payload).decode(),
                "sha256": rec.sha256,
                "signature": rec.signature,
                "key_version": rec.key_version,
                "public_key": base64.b64encode(bytes(pub)).decode(),
            }

        receipt = self.receipts.issue(period.id, build)
        if receipt.pdf_key and self.store.get(receipt.pdf_key) is not None:
            return True  # issued and rendered: the signed receipt's PDF is not rendered again
        org = self.orgs.get(period.org_id)
        from orchestration.pdf import render_receipt_pdf

        pdf = render_receipt_pdf(
            payload=receipt.payload,
            payload_hash=receipt.payload_hash,
            signature=receipt.signature,
            key_version=receipt.key_version,
            public_key=receipt.public_key,
            org_name=org.name if org else period.org_id,
            issued_on=receipt.created_at.date().isoformat(),
            verify_url=verify_url(receipt.serial_number, self.public_url),
            allocations=[a.model_dump() for a in allocations],
            figures=figures,
        )
        key = pdf_key(period.org_id, period.month, receipt.serial_number)
        digest = self.store.put(key, pdf, "application/pdf")
        self.receipts.set_artifact(receipt.id, "pdf", key, digest)
        return True

    # ------------------------------------------------------------------------------------------- 5. pack

    def audit_pack(self, periods: list[Period]) -> StepResult:
        return self._each("audit pack", periods, self._pack_one)

    def _pack_one(self, period: Period) -> bool:
        period = self._fresh(period)
        receipt = self.receipts.for_period(period.id)
        org = self.orgs.get(period.org_id)
        made = False
        if receipt is not None and org is not None and is_paid(org.plan_tier):
            data = self.build_pack(period, receipt)
            key = pack_key(period.org_id, period.month)
            digest = self.store.put(key, data, "application/zip")
            self.receipts.set_artifact(receipt.id, "audit_pack", key, digest)
            made = True
        retired = receipt.co2_retired_kg if receipt is not None else None
        self.periods.mark_closed(period.id, retired)
        return made

    def build_pack(self, period: Period, receipt) -> bytes:
        figures = period.figures or {}
        allocations = self.credits.allocations(period.id)
        files: dict[str, bytes] = {}
        pdf = self.store.get(receipt.pdf_key) if receipt.pdf_key else None
        if pdf is None:
            raise RuntimeError(f"receipt PDF {receipt.pdf_key} is missing from the artefact store")
        files[f"receipts/{receipt.serial_number}.pdf"] = pdf
        files[f"receipts/{receipt.serial_number}.json"] = _json(
            {
                **receipt.signed_record(),
                "public_key": receipt.public_key,
                "verification_url": verify_url(receipt.serial_number, self.public_url),
            }
        )
        for name in ("breakdown.json", "events.parquet"):
            blob = self.store.get(work_key(period.org_id, period.month, name))
            if blob is None:
                raise RuntimeError(f"work file {name} of {period.month} is missing: re-run the totals step")
            files[
                "calculations/breakdown.json" if name == "breakdown.json" else "events/usage_events.parquet"
            ] = blob
        files["methodology.json"] = _json(self._methodology(figures.get("factors_versions", [])))
        files["credits.json"] = _json([a.model_dump() for a in allocations])
        files["summary.json"] = _json(figures)
        manifest_payload = {
            "org_id": period.org_id,
            "month": period.month,
            "receipt_serial": receipt.serial_number,
            "files": [
                {"path": path, "sha256": sha256_hex(blob), "bytes": len(blob)}
                for path, blob in sorted(files.items())
            ],
        }
        rec = self.keyring.sign(manifest_payload)
        files["manifest.json"] = _json(rec.model_dump())
        return deterministic_zip(files)

    def _methodology(self, versions: Iterable[str]) -> dict[str, Any]:
        fv = FactorVersions(self.engine)
        out = {}
        for v in sorted(versions):
            row = fv.get(v)
            if row is None:
                from core.methodology import load_factor_set

                try:
                    body = load_factor_set(v).model_dump(mode="json")
                    out[v] = {"source": "built-in", "factor_set": body}
                except (FileNotFoundError, ValueError):  # unknown version: say so rather than fail the pack
                    out[v] = {"source": "unknown"}
                continue
            out[v] = {
                "source": "control plane",
                "published_at": row.published_at.isoformat(),
                "yaml": row.body,
            }
        return {
            "pipeline": "tokens × J/token (per phase) × PUE → facility J; J / 3.6e6 → kWh; kWh × grid kg/kWh → kg CO2e",
            "pipeline_v2": "per event, with the factors recorded on it: market-based CO2e = facility kWh × "
            "market grid kg/kWh; embodied CO2e = IT J × embodied kg/J (not × PUE); water = IT kWh × (on-site "
            "WUE + PUE × off-site L/kWh); cost = tokens × USD per 1M; energy_source = measured events use "
            "metered energy instead of the token estimate (factor sets from v2.0; earlier events carry none "
            "of these: null, with coverage counts)",
            "retirement_basis": "upper bound (co2_kg_high) of the period, rounded up to the milligram; "
            "credits in whole tonnes",
            "factor_versions": out,
        }

    def _fresh(self, period: Period) -> Period:
        p = self.periods.get(period.id)
        assert p is not None
        return p

    # ------------------------------------------------------------------------------------------- all

    def run(
        self, month: str, org: str | None = None, cutoff: datetime | None = None
    ) -> dict[str, StepResult]:
        """All steps in order (what the Dagster job does, without Dagster)."""
        out = {"prepare": self.prepare(month, org, cutoff)}
        for step in ("totals", "retire", "receipt", "audit_pack"):
            out[step] = getattr(self, step)(self.to_process(month, org))
        return out


def check_frozen(frozen: Any, fresh: Any, path: str = "figures") -> None:
    """Every value of the frozen figures equals the one computed again (keys added by newer code are
    ignored): the ledger rows up to a cutoff never change, so a difference is a bug or a tampered warehouse."""
    if isinstance(frozen, dict) and isinstance(fresh, dict):
        for key, value in frozen.items():
            if key not in fresh:
                raise ControlPlaneError(f"{path}.{key} is frozen but no longer computed")
            check_frozen(value, fresh[key], f"{path}.{key}")
        return
    if json.loads(json.dumps(fresh)) != frozen:
        raise ControlPlaneError(
            f"{path}: frozen {frozen!r} but the ledger now gives {fresh!r}: a closed period never changes"
        )


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True)
    return buf.getvalue()


def deterministic_zip(files: dict[str, bytes]) -> bytes:
    """A zip whose bytes depend only on the files: sorted names, fixed timestamps and attributes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, files[name], compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    return buf.getvalue()


def month_of_partition(key: str) -> str:
    """Dagster monthly partition key "2026-10-01" → "2026-10"."""
    return key[:7]


def parse_cutoff(value: str | None) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
