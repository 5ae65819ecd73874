"""The batch runner: executes batches line by line through the gateway's own request handling
(`Gateway.serve`: validation, budgets, routing, upstream fallback, metering, signed receipts), and writes
the output and error files. docs/batch.md.

It runs inside the gateway process (`create_gateway_app(..., batch_runner=True)`; `joulestream up` does) or
as its own process (`joulestream batch-runner`), any number of them: each `claim`s a batch for a lease
(`controlplane.batches`), renews it while it works, and a batch whose runner died is taken over when its lease
runs out.

Status transitions (OpenAI's): validating → in_progress → finalizing → completed; validating → failed (the
file does not fit the batch's endpoint); in_progress → expired (the completion window ended: lines not run
go to the error file as `batch_expired`); validating | in_progress → cancelling (API) → cancelled.

Exactly once: a line's usage event id and receipt id derive from (batch id, custom_id) (`line_uid`). Lines
run in chunks of `batch_concurrency`; the runner then waits until the gateway has their usage events in
Kafka or in the fsync'd spool and their receipts stored, and only then records the lines (one row per
custom_id) — that commit runs beside the next chunks, so at most 8 chunks are served and not yet recorded.
A runner killed before that record re-runs those lines on resume: the upstream is asked again,
but the event and receipt ids are the same, so the ledger (dedup by event id) and the receipts (stored once
per id) count each line once, and the line's row is written once. A killed runner never loses a line: what
is not recorded is run again.

Carbon-aware start: when validating, the runner looks up the region of the upstream the first line routes
to, and with an hourly intensity profile for it (`core.intensity`) sets `run_after` to the cleanest start
within the window; no line runs before. The batch's `carbon` reports the CO2e versus running at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.responses import Response

from controlplane.batches import Batch, Batches, BatchFile, BatchFiles, IntensityProfiles, LineRow
from core.artifacts import ArtifactStore
from core.intensity import carbon_report, plan_start
from pipelines.gateway.auth import Caller
from pipelines.gateway.batch_format import (
    ENDPOINTS,
    ParsedLine,
    line_uid,
    output_line,
    parse_jsonl,
    unrun_line,
)
from pipelines.gateway.batches import input_key
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.gateway import Gateway

log = logging.getLogger("joulestream.gateway.batch")
RETRY_STATUSES = (429, 503)  # budgets and a momentarily unavailable upstream: wait and retry the line
MAX_TRIES = 6
CHECK_S = 0.25  # how often a running batch re-reads its status (cancellation, expiry)


class BatchRunner:
    def __init__(
        self,
        gateway: Gateway,
        store: ArtifactStore,
        *,
        lease_s: float = 60.0,
        clock: Callable[[], datetime] | None = None,
        owner: str | None = None,
    ) -> None:
        self.gw, self.store, self.lease_s = gateway, store, lease_s
        s = gateway.settings
        self.concurrency, self.poll_s, self.margin_h = (
            s.batch_concurrency,
            s.batch_poll_s,
            s.batch_finish_margin_h,
        )
        self.max_lines = s.batch_max_lines
        self.batches, self.files = Batches(gateway.engine), BatchFiles(gateway.engine)
        self.profiles = IntensityProfiles(gateway.engine)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.owner = owner or f"{socket.gethostname()[:40]}:{os.getpid()}"
        self._regions = {u.routed_to: u.region for u in gateway.config.upstreams}
        self.lines_run = 0  # lines sent through the gateway by this runner (re-runs included)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._task = asyncio.create_task(self.run_forever(), name="batch-runner")

    def request_stop(self) -> None:
        """Stop after the chunk in flight (signal handlers call this)."""
        self._stop.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                worked = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # never die: log, wait, go on (the batch's lease runs out, it is retried)
                log.exception("batch runner step failed")
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.poll_s)

    async def run_once(self) -> bool:
        """Claim one due batch and advance it as far as it goes now; whether there was one."""
        b = await asyncio.to_thread(self.batches.claim, self.owner, self.clock(), self.lease_s)
        if b is None:
            return False
        try:
            await self._advance(b)
        finally:
            await asyncio.to_thread(self.batches.release, b.id, self.owner)
        return True

    # ------------------------------------------------------------------------------------------ steps
    async def _advance(self, b: Batch) -> None:
        if b.status == "validating":
            lines = await self._validate(b)
            if lines is None:
                return
            b = await self._reload(b)
        if b.status == "cancelling":
            await self._finalize(b, "cancelled")
        elif b.status == "finalizing":
            await self._finalize(b, "completed")
        elif b.status == "in_progress":
            now = self.clock()
            if now >= b.expires_at:
                await self._expire(b)
            elif b.run_after is None or b.run_after <= now:
                await self._run(b)

    async def _reload(self, b: Batch) -> Batch:
        fresh = await asyncio.to_thread(self.batches.by_id, b.id)
        assert fresh is not None
        return fresh

    async def _lines(self, b: Batch) -> list[ParsedLine] | None:
        f = await asyncio.to_thread(self.files.get, b.org_id, b.input_file_id)
        data = None if f is None else await asyncio.to_thread(self.store.get, f.storage_key)
        if data is None:
            return None
        return await asyncio.to_thread(parse_jsonl, data, self.max_lines)

    async def _validate(self, b: Batch) -> list[ParsedLine] | None:
        now = self.clock()
        try:
            lines = await self._lines(b)
        except GatewayError as err:
            lines, problem = (
                None,
                {"code": err.code, "message": err.message, "param": "input_file_id", "line": None},
            )
        else:
            problem = {
                "code": "file_not_found",
                "message": "The input file was deleted.",
                "param": "input_file_id",
            }
        errors: list[dict[str, Any]] = []
        if lines is None:
            errors = [{"line": None, **problem}]
        else:
            errors = [
                {
                    "code": "invalid_url",
                    "message": f"The line's url {ln.url!r} differs from the batch's endpoint {b.endpoint!r}.",
                    "param": "url",
                    "line": ln.line_no,
                }
                for ln in lines
                if ln.url != b.endpoint
            ][:100]
        if errors or lines is None:
            await asyncio.to_thread(
                self.batches.transition,
                b.id,
                ("validating",),
                "failed",
                failed_at=now,
                errors=orjson.dumps(errors).decode(),
            )
            return None
        region = self.gw.region_for(ENDPOINTS[b.endpoint], lines[0].body)
        profile = None if region is None else await asyncio.to_thread(self.profiles.get, region)
        start = plan_start(profile, now, b.expires_at, self.margin_h)
        plan = carbon_report(region, profile, now, start, [])
        moved = await asyncio.to_thread(
            self.batches.transition,
            b.id,
            ("validating",),
            "in_progress",
            in_progress_at=now,
            run_after=start,
            total=len(lines),
            carbon=plan.model_dump_json(),
        )
        if moved and start > now:
            log.info("batch %s deferred to %s (region %s)", b.id, start.isoformat(), region)
        return lines if moved else None

    async def _run(self, b: Batch) -> None:
        lines = await self._lines(b)
        if lines is None:
            await self._finalize(b, "completed")
            return
        caller = await asyncio.to_thread(self.gw.auth.caller_for_key, b.org_id, b.key_id)
        done = await asyncio.to_thread(self.batches.done_ids, b.id)
        pending = [ln for ln in lines if ln.custom_id not in done]
        endpoint = ENDPOINTS[b.endpoint]
        # Lines are served a chunk at a time; the chunks served are committed (durable, then recorded) by one
        # commit in flight beside the serving, so the wait for Kafka/receipts overlaps the next chunks. At most
        # `backlog` served lines wait uncommitted: what a kill can make the upstream answer twice.
        backlog = self.concurrency * 8
        ready: list[LineRow] = []
        commit: asyncio.Task[bool] | None = None
        checked = 0.0
        for i in range(0, len(pending), self.concurrency):
            if self._stop.is_set():
                break
            if time.monotonic() - checked > CHECK_S:  # cancelled or expired meanwhile?
                checked = time.monotonic()
                b = await self._reload(b)
                if b.status != "in_progress" or self.clock() >= b.expires_at:
                    break
            chunk = pending[i : i + self.concurrency]
            if caller is None:
                msg = "The API key that created the batch is revoked."
                ready += [self._unrun(b, ln, "api_key_revoked", msg) for ln in chunk]
            else:
                ready += await asyncio.gather(*(self._run_line(b, caller, endpoint, ln) for ln in chunk))
            if commit is not None and (commit.done() or len(ready) >= backlog):
                if not await commit:
                    return
                commit = None
            if commit is None:
                commit, ready = asyncio.create_task(self._commit(b, ready)), []
        # a stop, a cancellation or the end: commit what was served
        if commit is not None and not await commit:
            return
        if ready and not await self._commit(b, ready):
            return
        b = await self._reload(b)
        if b.status == "in_progress" and self.clock() >= b.expires_at:
            await self._expire(b)
            return
        if b.status == "in_progress" and not self._stop.is_set():
            await asyncio.to_thread(
                self.batches.transition, b.id, ("in_progress",), "finalizing", finalizing_at=self.clock()
            )
            b = await self._reload(b)
        if b.status in ("finalizing", "cancelling"):
            await self._advance(b)

    async def _commit(self, b: Batch, rows: list[LineRow]) -> bool:
        """Wait until the rows' usage events are in Kafka or the spool and their receipts stored, then record
        them (and renew the lease). False when that did not happen in time: the rows will be re-run."""
        ids = [f"rcpt_{line_uid(b.id, r.custom_id).hex}" for r in rows]
        if not await self.gw.wait_durable(self.gw.durable_mark(), ids):
            log.warning(
                "batch %s: usage events not durable in time; %d lines will be re-run", b.id, len(rows)
            )
            return False
        await asyncio.to_thread(self.batches.record_lines, b.id, rows)
        until = self.clock() + timedelta(seconds=self.lease_s)
        await asyncio.to_thread(self.batches.renew, b.id, self.owner, until)
        return True

    async def _run_line(self, b: Batch, caller: Caller, endpoint: str, ln: ParsedLine) -> LineRow:
        uid = line_uid(b.id, ln.custom_id)
        resp: Response | None = None
        for attempt in range(MAX_TRIES):
            resp = await self.gw.serve(
                endpoint,
                caller,
                ln.body,
                request_id=f"batch_req_{uid.hex}",
                uid=uid,
                allow_stream=False,
                labels={"batch_id": b.id, "custom_id": ln.custom_id[:200]},
            )
            if resp.status_code not in RETRY_STATUSES or attempt == MAX_TRIES - 1:
                break
            wait = resp.headers.get("retry-after", "")
            await asyncio.sleep(
                min(float(wait) if wait.replace(".", "", 1).isdigit() else 0.2 * 2**attempt, 30.0)
            )
        assert resp is not None
        self.lines_run += 1
        headers = dict(resp.headers)
        region = self._regions.get(headers.get("x-routed-to", ""))
        out = output_line(uid, ln.custom_id, resp.status_code, headers, bytes(resp.body), region)
        j = out.get("joulestream") or {}
        return LineRow(
            custom_id=ln.custom_id,
            line_no=ln.line_no,
            ok=200 <= resp.status_code < 300,
            output=orjson.dumps(out).decode(),
            energy_j=float(j.get("energy_j") or 0.0),
            co2_kg=float(j.get("carbon_mg") or 0.0) / 1e6,
            done_at=self.clock(),
        )

    def _unrun(self, b: Batch, ln: ParsedLine, code: str, message: str) -> LineRow:
        out = unrun_line(line_uid(b.id, ln.custom_id), ln.custom_id, code, message)
        return LineRow(
            custom_id=ln.custom_id,
            line_no=ln.line_no,
            ok=False,
            output=orjson.dumps(out).decode(),
            energy_j=0.0,
            co2_kg=0.0,
            done_at=self.clock(),
        )

    async def _expire(self, b: Batch) -> None:
        lines = await self._lines(b) or []
        done = await asyncio.to_thread(self.batches.done_ids, b.id)
        rows = [
            self._unrun(
                b,
                ln,
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            )
            for ln in lines
            if ln.custom_id not in done
        ]
        if rows:
            await asyncio.to_thread(self.batches.record_lines, b.id, rows)
        await self._finalize(b, "expired")

    async def _finalize(self, b: Batch, final: str) -> None:
        """Write the output and error files from the recorded lines and set the final status (re-runnable)."""
        rows = await asyncio.to_thread(self.batches.lines, b.id)
        out_id = await self._write(b, "output", [r.output for r in rows if r.ok])
        err_id = await self._write(b, "errors", [r.output for r in rows if not r.ok])
        region, profile = None, None
        if b.carbon is not None:
            region = (b.carbon_dict or {}).get("region")
            profile = None if region is None else await asyncio.to_thread(self.profiles.get, region)
        report = carbon_report(
            region,
            profile,
            b.in_progress_at or b.created_at,
            b.run_after,
            [(r.energy_j, r.done_at) for r in rows],
        )
        now = self.clock()
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}[final]
        await asyncio.to_thread(
            self.batches.transition,
            b.id,
            ("in_progress", "finalizing", "cancelling"),
            final,
            output_file_id=out_id,
            error_file_id=err_id,
            carbon=report.model_dump_json(),
            **{stamp: now},
        )

    async def _write(self, b: Batch, kind: str, lines: list[str]) -> str | None:
        if not lines:
            return None
        file_id = "file-" + hashlib.sha256(f"{b.id}:{kind}".encode()).hexdigest()[:24]
        data = ("\n".join(lines) + "\n").encode()
        key = input_key(b.org_id, file_id)
        sha = await asyncio.to_thread(self.store.put, key, data, "application/jsonl")
        f = BatchFile(
            id=file_id,
            org_id=b.org_id,
            purpose="batch_output",
            filename=f"{b.id}_{kind}.jsonl",
            bytes=len(data),
            line_count=len(lines),
            storage_key=key,
            sha256=sha,
            created_at=self.clock(),
        )
        await asyncio.to_thread(self.files.put, f)
        return file_id
