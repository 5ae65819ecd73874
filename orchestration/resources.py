"""Dagster resources of the monthly close: warehouse, control-plane DB, artefact storage, signing keys, Stripe.

Every field defaults to the environment (`core.settings`), so `dagster dev -m orchestration` and
`joulestream close-month` need no configuration.

The warehouse resource and the one-holder rule of the embedded warehouse (chdb): `reader()` opens the
warehouse directly when it can (ClickHouse server, or a chdb path nobody holds). When the chdb path is held by
another process — the `joulestream up` runtime — it reads `$JOULESTREAM_HOME/runtime.json` and asks that
process for the close's rows over its token-protected loopback HTTP (`api/internal_close.py`): the same
queries (`warehouse/close.py`) run there, and the rows come back as an Arrow IPC stream.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Protocol

import dagster as dg
import httpx
import pyarrow as pa

from core.settings import Settings, load_settings
from warehouse import close as close_queries


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

    def __init__(self, url: str, token: str, timeout: float = 300.0) -> None:
        from cli.runtime import TOKEN_HEADER

        self.url = url.rstrip("/")
        self.headers = {TOKEN_HEADER: token}
        self.timeout = timeout

    def _get(self, path: str, **params: Any) -> httpx.Response:
        r = httpx.get(
            f"{self.url}/internal/v1/close/{path}",
            params={k: v for k, v in params.items() if v is not None},
            headers=self.headers,
            timeout=self.timeout,
        )
        r.raise_for_status()
        return r

    def orgs(self, start, end, cutoff):
        return self._get("orgs", start=_iso(start), end=_iso(end), cutoff=_iso(cutoff)).json()["orgs"]

    def totals(self, org_id, start, end, cutoff, adjustment_from):
        return self._get(
            "totals",
            org_id=org_id,
            start=_iso(start),
            end=_iso(end),
            cutoff=_iso(cutoff),
            adjustment_from=_iso(adjustment_from),
        ).json()

    def events(self, org_id, start, end, cutoff, adjustment_from):
        r = self._get(
            "events",
            org_id=org_id,
            start=_iso(start),
            end=_iso(end),
            cutoff=_iso(cutoff),
            adjustment_from=_iso(adjustment_from),
        )
        return close_queries.conform(pa.ipc.open_stream(r.content).read_all())


def open_reader(settings: Settings, database: str | None = None, mode: str = "auto") -> CloseReader:
    """A direct reader when this process can open the warehouse, else the runtime holding it.

    mode: "auto" (that), "direct" (never ask a runtime), "runtime" (always ask the runtime)."""
    from cli.runtime import find_runtime  # runtime.json: the address book of the warehouse holder
    from warehouse.client import WarehouseLocked, get_client

    if mode == "runtime":
        info = find_runtime(settings)
        if info is None:
            raise RuntimeError(f"no live runtime.json under {settings.home}")
        return RuntimeReader(info.url, info.token)
    try:
        return DirectReader(get_client(settings, database=database))
    except WarehouseLocked as exc:
        info = find_runtime(settings) if mode == "auto" else None
        if info is None:
            raise RuntimeError(
                f"{exc} — and there is no live runtime.json under {settings.home} to ask for the figures"
            ) from exc
        return RuntimeReader(info.url, info.token)


class SettingsMixin:
    home: str | None
    clickhouse: str | None

    def settings(self) -> Settings:
        s = load_settings()
        if self.home:
            s = load_settings({"JOULESTREAM_HOME": self.home, **_env_without_home()})
        if self.clickhouse:
            s = s.replace(clickhouse=self.clickhouse)
        return s


def _env_without_home() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "JOULESTREAM_HOME"}


class WarehouseResource(dg.ConfigurableResource, SettingsMixin):
    """The warehouse (the same clickhouse-connect factory as everything else), or the runtime holding it."""

    clickhouse: str | None = None  # dsn; default JOULESTREAM_CLICKHOUSE / the embedded chdb path
    database: str | None = None  # ClickHouse database; default JOULESTREAM_CH_DATABASE
    home: str | None = None  # JOULESTREAM_HOME (runtime.json lives there)
    mode: str = "auto"  # auto | direct | runtime (see open_reader)

    def reader(self) -> CloseReader:
        return open_reader(self.settings(), self.database, self.mode)


class ControlPlaneResource(dg.ConfigurableResource):
    database_url: str | None = None  # SQLAlchemy URL; default JOULESTREAM_DATABASE

    def engine(self):
        """The control-plane engine; the database is migrated beforehand (`joulestream migrate`)."""
        from controlplane import get_engine

        return get_engine(self.database_url or load_settings().database)


class ArtifactsResource(dg.ConfigurableResource):
    url: str | None = None  # default JOULESTREAM_ARTIFACTS, else $JOULESTREAM_HOME/artifacts
    home: str | None = None

    def store(self):
        from core.artifacts import open_store

        return open_store(self.url, home=self.home)


class SigningResource(dg.ConfigurableResource):
    home: str | None = None  # keys under $JOULESTREAM_HOME/keys/receipts (or JOULESTREAM_SIGNING_KEY)

    def keyring(self):
        from core.receipts import Keyring

        return Keyring.load(self.home)


class StripeResource(dg.ConfigurableResource):
    """Stripe (the real `stripe` library): `api_base` points it at a stub in tests."""

    api_key: str | None = None  # default STRIPE_API_KEY
    api_base: str | None = None  # default STRIPE_API_BASE, else Stripe's

    def client(self):
        from controlplane.billing import stripe_client

        return stripe_client(load_settings(), api_key=self.api_key, api_base=self.api_base)
