"""Dagster resources of the monthly close: warehouse, control-plane DB, artefact storage, signing keys, Stripe.

Every field defaults to the process settings (`core.settings.load_settings()`), so `dagster dev -m
orchestration` and `joulestream close-month` need no configuration; a resource's `home` moves the state
directory (and the embedded paths derived from it).

The warehouse resource reaches the warehouse the one way every process does (`warehouse.runtime.open_or_ask`):
it asks the live runtime recorded in `home/runtime.json` — the process holding the embedded chdb path, over
its token-protected loopback HTTP (`api/internal_close.py`, the same `warehouse/close.py` queries, rows back as
an Arrow IPC stream) — and otherwise opens the warehouse itself.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
import pyarrow as pa

from core.settings import Settings, load_settings
from warehouse import close as close_queries
from warehouse.runtime import RuntimeInfo, ask, open_or_ask


class CloseReader(Protocol):
    mode: str

    def orgs(self, start: date, end: date, cutoff: datetime) -> list[str]: ...

    def totals(
        self, org_id: str, start: date, end: date, cutoff: datetime, adjustment_from: datetime | None
    ) -> dict[str, dict[str, Any]]: ...

    def events(
        self, org_id: str, start: date, end: date, cutoff: datetime, adjustment_from: datetime | None
    ) -> pa.Table: ...


class DirectReader:
    """Runs the close queries on a warehouse client this process holds."""

    def __init__(self, client: Any, mode: str = "direct") -> None:
        self.client, self.mode = client, mode

    def orgs(self, start, end, cutoff):
        return close_queries.close_orgs(self.client, start, end, cutoff)

    def totals(self, org_id, start, end, cutoff, adjustment_from):
        return close_queries.close_totals(self.client, org_id, start, end, cutoff, adjustment_from)

    def events(self, org_id, start, end, cutoff, adjustment_from):
        return close_queries.close_events(self.client, org_id, start, end, cutoff, adjustment_from)


def _iso(v: date | datetime | None) -> str | None:
    return None if v is None else v.isoformat()


class RuntimeReader:
    """Asks the process that holds the embedded warehouse (`joulestream up`) over loopback HTTP."""

    mode = "runtime"

    def __init__(self, info: RuntimeInfo, timeout: float = 300.0) -> None:
        self.info, self.timeout = info, timeout

    def _get(self, path: str, **params: Any) -> Any:
        return ask(self.info, f"/internal/v1/close/{path}", timeout=self.timeout, **params)

    def orgs(self, start, end, cutoff):
        return self._get("orgs", start=_iso(start), end=_iso(end), cutoff=_iso(cutoff)).json()["orgs"]

    def _period(self, org_id, start, end, cutoff, adjustment_from) -> dict[str, Any]:
        return {
            "org_id": org_id,
            "start": _iso(start),
            "end": _iso(end),
            "cutoff": _iso(cutoff),
            "adjustment_from": _iso(adjustment_from),
        }

    def totals(self, org_id, start, end, cutoff, adjustment_from):
        return self._get("totals", **self._period(org_id, start, end, cutoff, adjustment_from)).json()

    def events(self, org_id, start, end, cutoff, adjustment_from):
        r = self._get("events", **self._period(org_id, start, end, cutoff, adjustment_from))
        return close_queries.conform(pa.ipc.open_stream(r.content).read_all())


def open_reader(settings: Settings, database: str | None = None, mode: str = "auto") -> CloseReader:
    """The close's reader: the runtime holding the warehouse, or a client of this process
    (`warehouse.runtime.open_or_ask`; mode "auto", "direct" or "runtime")."""
    if mode not in ("auto", "direct", "runtime"):
        raise ValueError(f"warehouse mode must be auto, direct or runtime, not {mode!r}")
    target = open_or_ask(settings, database, mode)  # type: ignore[arg-type]
    return RuntimeReader(target) if isinstance(target, RuntimeInfo) else DirectReader(target)


def resource_settings(home: str | None = None) -> Settings:
    """The process settings; with `home`, moved there — the embedded paths derived from the old home
    (warehouse, control-plane file) follow, explicitly configured ones stay."""
    s = load_settings()
    if not home:
        return s
    moved: dict[str, Any] = {"home": Path(home)}
    if s.clickhouse == f"chdb:///{s.home / 'warehouse'}":
        moved["clickhouse"] = ""
    if s.database == f"sqlite:///{s.home / 'control.db'}":
        moved["database"] = ""
    return s.replace(**moved)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse (the same clickhouse-connect factory as everything else), or the runtime holding it."""

    clickhouse: str | None = None  # dsn; default JOULESTREAM_CLICKHOUSE / the embedded chdb path
    database: str | None = None  # ClickHouse database; default JOULESTREAM_CH_DATABASE
    home: str | None = None  # JOULESTREAM_HOME (runtime.json lives there)
    mode: str = "auto"  # auto | direct | runtime (see open_reader)

    def reader(self) -> CloseReader:
        s = resource_settings(self.home)
        if self.clickhouse:
            s = s.replace(clickhouse=self.clickhouse)
        return open_reader(s, self.database, self.mode)


class ControlPlaneResource(dg.ConfigurableResource):
    database_url: str | None = None  # SQLAlchemy URL; default JOULESTREAM_DATABASE

    def engine(self):
        """The control-plane engine; the database is migrated beforehand (`joulestream migrate`)."""
        from controlplane import get_engine

        return get_engine(self.database_url or resource_settings().database)


class ArtifactsResource(dg.ConfigurableResource):
    url: str | None = None  # default JOULESTREAM_ARTIFACTS, else $JOULESTREAM_HOME/artifacts
    home: str | None = None

    def store(self):
        from core.artifacts import open_store

        return open_store(resource_settings(self.home), self.url)


class SigningResource(dg.ConfigurableResource):
    home: str | None = None  # keys under $JOULESTREAM_HOME/keys/receipts (or JOULESTREAM_SIGNING_KEY)

    def keyring(self):
        from core.receipts import Keyring

        return Keyring.load(resource_settings(self.home))


class StripeResource(dg.ConfigurableResource):
    """Stripe (the real `stripe` library): `api_base` points it at a stub in tests."""

    api_key: str | None = None  # default STRIPE_API_KEY
    api_base: str | None = None  # default STRIPE_API_BASE, else Stripe's

    def client(self):
        from controlplane.billing import stripe_client

        return stripe_client(resource_settings(), api_key=self.api_key, api_base=self.api_base)
