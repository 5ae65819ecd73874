"""Per-request receipts: signed and stored off the request path.

The request path calls `add(receipt_id, org_id, payload)` (a dict insert). A background task signs pending
payloads with the current key (`core.receipts`, Ed25519 over RFC 8785 canonical JSON) and stores them in the
control plane (`gateway_receipts`) in batches every `flush_s` (default 50 ms). `get` serves a pending
receipt from memory (signing it on the spot — Ed25519 is deterministic, so it is the same record that will
be stored), so a receipt id is fetchable as soon as its answer is sent. Stop flushes everything; a crash
loses at most the last `flush_s` of receipts (the usage events themselves are durable, see publisher.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from controlplane.gateway import GatewayReceipts
from core.receipts import Keyring, SignedRecord

log = logging.getLogger("joulestream.gateway.receipts")
CHUNK = 8


class ReceiptWriter:
    def __init__(
        self, engine: Engine, keyring: Keyring, flush_s: float = 0.05, batch_max: int = 2000
    ) -> None:
        self.store = GatewayReceipts(engine)
        self.keyring = keyring
        self.flush_s, self.batch_max = flush_s, batch_max
        self._pending: dict[str, tuple[str, datetime, dict[str, Any]]] = {}
        self._signed: dict[str, SignedRecord] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.stored = 0
        self.last_error: str | None = None

    def add(self, receipt_id: str, org_id: str, payload: dict[str, Any]) -> None:
        self._pending[receipt_id] = (org_id, datetime.now(UTC), payload)
        if len(self._pending) == 1:
            self._wake.set()

    def any_pending(self, receipt_ids: list[str]) -> bool:
        """Whether any of these receipts is not stored yet."""
        return any(rid in self._pending for rid in receipt_ids)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _sign(self, receipt_id: str, payload: dict[str, Any]) -> SignedRecord:
        rec = self._signed.get(receipt_id)
        if rec is None:
            rec = self._signed[receipt_id] = self.keyring.sign(payload)
        return rec

    async def get(self, org_id: str, receipt_id: str) -> SignedRecord | None:
        item = self._pending.get(receipt_id)
        if item is not None:
            return self._sign(receipt_id, item[2]) if item[0] == org_id else None
        return await asyncio.to_thread(self.store.get, org_id, receipt_id)

    def _flush_sync(self, batch: list[tuple[str, str, datetime, dict[str, Any]]]) -> None:
        # Small chunks, with the GIL handed back between them: this runs in a worker thread next to the
        # event loop, and one long stretch of Python here would stall every request for its duration.
        for i in range(0, len(batch), CHUNK):
            rows = [
                (rid, org, ts, self._sign(rid, payload)) for rid, org, ts, payload in batch[i : i + CHUNK]
            ]
            self.store.insert_many(rows)
            time.sleep(0)

    async def _flush(self) -> None:
        items = list(self._pending.items())[: self.batch_max]
        batch = [(rid, org, ts, payload) for rid, (org, ts, payload) in items]
        await asyncio.to_thread(self._flush_sync, batch)
        for rid, _, _, _ in batch:
            self._pending.pop(rid, None)
            self._signed.pop(rid, None)
        self.stored += len(batch)

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            if not self._stopping:
                await asyncio.sleep(self.flush_s)
            try:
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("storing receipts failed; will retry")
                if self._stopping:
                    return
                await asyncio.sleep(1.0)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-receipt-writer")

    async def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                self._task.cancel()
            self._task = None
        if self._pending:
            log.error("%d receipts could not be stored at shutdown", len(self._pending))
