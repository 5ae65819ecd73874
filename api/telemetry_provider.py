"""The `TelemetryProvider` (api.telemetry) over the ClickHouse warehouse: dashboard figures and event lists
read through `warehouse.telemetry`, exports streamed through `warehouse.export`.

    provider = WarehouseTelemetry(async_warehouse)                   # share a process's warehouse thread
    provider = WarehouseTelemetry(lambda: pipeline.warehouse)        # … one that is opened later
    provider = WarehouseTelemetry(client_factory=lambda: get_client())  # or own one (what create_app does)

Every warehouse call runs on the `AsyncWarehouse` thread (one thread for all calls of a process), so the
event loop never blocks on ClickHouse. An export is a stream of such calls: open the query, then one call
per chunk, each yielded to the response before the next is asked for — other requests' queries run
between two chunks, so a long export delays them by one chunk at most. On the embedded engine the stream
runs on a client of its own (a streaming query holds its client handle until closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date
from typing import Any

from api.telemetry import build_summary
from warehouse.aio import AsyncWarehouse
from warehouse.export import ExportFormat, ExportStream, open_export, stream_client
from warehouse.telemetry import Scope, events_page, models, project_co2, summary_parts

log = logging.getLogger("joulestream.api.telemetry")


class WarehouseTelemetry:
    """TelemetryProvider over the warehouse. Date ranges are inclusive UTC days."""

    def __init__(
        self,
        warehouse: AsyncWarehouse | Callable[[], AsyncWarehouse | None] | None = None,
        *,
        client_factory: Callable[[], Any] | None = None,
        idle_stream_clients: int = 2,
    ) -> None:
        if warehouse is None and client_factory is None:
            raise ValueError("WarehouseTelemetry needs an AsyncWarehouse or a client factory")
        self._warehouse = warehouse
        self._factory = client_factory
        self._owns_warehouse = warehouse is None
        self._lock = asyncio.Lock()
        self._idle: list[Any] = []  # stream clients owned by this provider, ready for the next export
        self._max_idle = idle_stream_clients
        self.active_exports = 0  # exports whose query is open (observability, tests)

    async def warehouse(self) -> AsyncWarehouse:
        if callable(self._warehouse) and not isinstance(self._warehouse, AsyncWarehouse):
            found = self._warehouse()
            if found is None:
                raise RuntimeError("the warehouse is not open (yet)")
            return found
        if self._warehouse is None:
            async with self._lock:
                if self._warehouse is None:
                    assert self._factory is not None
                    client = await asyncio.to_thread(self._factory)
                    self._warehouse = AsyncWarehouse(client)
        return self._warehouse

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await (await self.warehouse()).run(fn, *args)

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(client, *args)` on the warehouse thread: the metrics and report reads (`warehouse.reporting`)."""
        return await self._run(fn, *args)

    async def project_totals(
        self, org_id: str, project_ids: Sequence[str], start: date, end: date
    ) -> dict[str, float]:
        found = await self._run(project_co2, org_id, list(project_ids), start, end)
        return {pid: found.get(pid, 0.0) for pid in project_ids}

    async def summary(self, org_id: str, project_id: str | None, start: date, end: date) -> dict[str, Any]:
        rows, est = await self._run(summary_parts, Scope(org_id, start, end, project_id=project_id))
        return build_summary(rows, start, end, est)

    async def events(self, scope: Scope, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        return await self._run(events_page, scope, offset, limit)

    async def models(self, scope: Scope) -> list[dict[str, Any]]:
        return await self._run(models, scope)

    async def export(
        self, scope: Scope, fmt: ExportFormat, project_names: dict[str, str], metadata: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        """The export body, chunk by chunk. Each chunk is read on the warehouse thread; the query is closed
        when the body ends, fails, or the consumer stops early (client gone)."""
        wh = await self.warehouse()
        client, owned = await wh.run(self._checkout)
        stream: ExportStream | None = None
        self.active_exports += 1
        try:
            stream = await wh.run(_open, client, scope, fmt, project_names, metadata)
            while chunk := await wh.run(_next_chunk, stream):
                yield chunk
        finally:
            # runs on cancellation too: finish the clean-up on the warehouse thread even if we are cancelled
            cleanup = asyncio.ensure_future(wh.run(self._release, stream, client, owned))
            cleanup.add_done_callback(self._export_done)
            try:
                await asyncio.shield(cleanup)
            except asyncio.CancelledError:
                pass

    def _export_done(self, _task: Any) -> None:
        self.active_exports -= 1

    def _checkout(self, main_client: Any) -> tuple[Any, bool]:
        if self._idle:
            client = self._idle.pop()
            client.database = main_client.database
            return client, True
        return stream_client(main_client)

    def _release(self, main_client: Any, stream: ExportStream | None, client: Any, owned: bool) -> None:
        try:
            if stream is not None:
                stream.close()
        except Exception:  # a broken stream: do not reuse its client
            log.warning("closing an export stream failed", exc_info=True)
            if owned:
                _close_quietly(client)
            return
        if owned:
            if len(self._idle) < self._max_idle:
                self._idle.append(client)
            else:
                _close_quietly(client)

    def close(self) -> None:
        """Close the stream clients and, when this provider opened it, the warehouse thread."""
        for client in self._idle:
            _close_quietly(client)
        self._idle = []
        if self._owns_warehouse and isinstance(self._warehouse, AsyncWarehouse):
            self._warehouse.close()


def _open(
    _main: Any, client: Any, scope: Scope, fmt: ExportFormat, names: dict[str, str], metadata: dict[str, Any]
) -> ExportStream:
    return open_export(client, scope, fmt, names, json_metadata=metadata)


def _next_chunk(_main: Any, stream: ExportStream) -> bytes:
    return stream.next_chunk()


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:
        log.debug("closing a stream client failed", exc_info=True)
