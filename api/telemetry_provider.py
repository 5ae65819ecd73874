"""The real `TelemetryProvider` (api.telemetry): dashboard figures, event lists and exports read from the
ClickHouse warehouse through `warehouse.telemetry`.

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
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date, timedelta
from typing import Any, Protocol, runtime_checkable

from warehouse.aio import AsyncWarehouse
from warehouse.telemetry import (
    DailyModelRow,
    ExportFormat,
    ExportStream,
    Scope,
    daily_by_model,
    events_page,
    models,
    open_export,
    project_co2,
    stream_client,
)

log = logging.getLogger("joulestream.api.telemetry")

DENSE_CHART_MAX_DAYS = 400  # daily_chart lists every day of the period up to this length, else active days


@runtime_checkable
class TelemetryReader(Protocol):
    """What the telemetry and export routers need beyond `TelemetryProvider` (implemented here)."""

    async def events(self, scope: Scope, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...

    async def models(self, scope: Scope) -> list[dict[str, Any]]: ...

    def export(
        self, scope: Scope, fmt: ExportFormat, project_names: dict[str, str], metadata: dict[str, Any]
    ) -> AsyncIterator[bytes]: ...


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)) or (0,)


def build_summary(rows: Sequence[DailyModelRow], start: date, end: date) -> dict[str, Any]:
    """The dashboard summary from the daily rollup grouped by (day, provider, model, factors_version)."""
    tokens = {"uncached": 0, "cached": 0, "creation": 0, "output": 0}
    co2 = co2_low = co2_high = savings = energy = 0.0
    events = 0
    per_model: dict[tuple[str, str], dict[str, Any]] = {}
    per_day: dict[date, dict[str, Any]] = {}
    versions: set[str] = set()
    for r in rows:
        tokens["uncached"] += r.input_tokens_uncached
        tokens["cached"] += r.input_tokens_cached
        tokens["creation"] += r.input_tokens_cache_creation
        tokens["output"] += r.output_tokens
        co2 += r.co2_kg
        co2_low += r.co2_kg_low
        co2_high += r.co2_kg_high
        savings += r.co2_cached_savings_kg
        energy += r.energy_j
        events += r.events
        versions.add(r.factors_version)
        m = per_model.setdefault(
            (r.provider, r.model),
            {"model": r.model, "provider": r.provider, "total_tokens": 0, "co2_kg": 0.0, "event_count": 0},
        )
        m["total_tokens"] += r.total_tokens
        m["co2_kg"] += r.co2_kg
        m["event_count"] += r.events
        d = per_day.setdefault(r.day, {"date": r.day, "co2_kg": 0.0, "tokens": 0})
        d["co2_kg"] += r.co2_kg
        d["tokens"] += r.total_tokens
    models_out = sorted(per_model.values(), key=lambda m: (-m["co2_kg"], m["provider"], m["model"]))
    for m in models_out:
        m["percentage"] = round(100.0 * m["co2_kg"] / co2, 2) if co2 > 0 else 0.0
    if (end - start).days < DENSE_CHART_MAX_DAYS:
        chart = [
            per_day.get(day, {"date": day, "co2_kg": 0.0, "tokens": 0})
            for day in (start + timedelta(days=i) for i in range((end - start).days + 1))
        ]
    else:
        chart = [per_day[day] for day in sorted(per_day)]
    ordered_versions = sorted(versions, key=_version_key)
    return {
        "total_co2_kg": co2,
        "total_co2_lower_bound_kg": co2_low,
        "total_co2_upper_bound_kg": co2_high,
        "total_tokens": sum(tokens.values()),
        "input_tokens": tokens["uncached"] + tokens["cached"] + tokens["creation"],
        "output_tokens": tokens["output"],
        "total_energy_kwh": energy / 3.6e6,
        "event_count": events,
        "cached_vs_uncached": {
            "uncached_tokens": tokens["uncached"],
            "cached_tokens": tokens["cached"],
            "cache_creation_tokens": tokens["creation"],
            "cached_co2_savings_kg": savings,
        },
        "per_model": models_out,
        "daily_chart": chart,
        "factors_version": ordered_versions[-1] if ordered_versions else None,
        "factors_versions": ordered_versions,
        "period": {"start": start.isoformat(), "end": end.isoformat()},
    }


class WarehouseTelemetry:
    """TelemetryProvider + TelemetryReader over the warehouse. Date ranges are inclusive UTC days."""

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

    # TelemetryProvider ---------------------------------------------------------------------------------
    async def project_totals(
        self, org_id: str, project_ids: Sequence[str], start: date, end: date
    ) -> dict[str, float]:
        found = await self._run(project_co2, org_id, list(project_ids), start, end)
        return {pid: found.get(pid, 0.0) for pid in project_ids}

    async def summary(self, org_id: str, project_id: str | None, start: date, end: date) -> dict[str, Any]:
        rows = await self._run(daily_by_model, Scope(org_id, start, end, project_id=project_id))
        return build_summary(rows, start, end)

    # TelemetryReader -----------------------------------------------------------------------------------
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
