"""Per-org price overrides ("custom prices"): an org's own token prices for the models matching a pattern.

Table `price_overrides` (`controlplane.schema`, migration `0040_price_overrides`). One row = USD per 1M tokens
for uncached input, cached input (prompt-cache read), cache write and output, for the models matching
`model_pattern` (an fnmatch glob, case-insensitive, matched like the factor set's model patterns: against the
normalised model name and against the full name), at one `provider` or at every provider (`provider` "").
Enrichment applies an org's matching override instead of the factor set's price book, and records it in
`price_source` ("org override <id>: <provider/>pattern").

Which override wins when several match: the provider-specific one before the any-provider one, then an exact
pattern (no wildcard) before a glob, then the longer pattern, then the older row.

`PriceLookup` is the cheap cached read the stream worker (and re-enrichment) use: it reads the whole table at
most every `ttl_s` (one small query for every org; orgs without overrides cost a dict miss), matches with
compiled patterns, and keeps the last good read when the control plane cannot be reached.

Tenancy: every repository method takes `org_id`; another org's override is indistinguishable from a missing
one (NotFound).
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple, TypeVar

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import Conflict, Invalid, NotFound
from controlplane.models import _Row
from controlplane.schema import organizations, price_overrides
from core.methodology import Prices, normalise_model

log = logging.getLogger(__name__)

PATTERN_RE = re.compile(r"^[a-z0-9._:/@*?\[\]!+-]{1,200}$")
PROVIDER_RE = re.compile(r"^[a-z0-9._-]{1,64}$")
MAX_PRICE = 1_000_000.0  # USD per 1M tokens; the dearest real model is ~600
PRICE_FIELDS = ("input", "cached_input", "cache_write", "output")
DEFAULT_TTL_S = 10.0
T = TypeVar("T")


class PriceOverride(_Row):
    id: str
    org_id: str
    model_pattern: str
    provider: str | None  # None = every provider
    input: float
    cached_input: float
    cache_write: float
    output: float
    note: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def source(self) -> str:
        """What enrichment records as `price_source`."""
        scope = f"{self.provider}/" if self.provider else ""
        return f"org override {self.id}: {scope}{self.model_pattern}"


def _override(row: object) -> PriceOverride:
    d = dict(row._mapping)  # type: ignore[attr-defined]
    d["provider"] = d["provider"] or None
    return PriceOverride(**d)


def clean_pattern(pattern: str) -> str:
    p = pattern.strip().lower()
    if not PATTERN_RE.match(p):
        raise Invalid(
            "model_pattern must be 1-200 characters of a-z 0-9 . _ : / @ + - and the glob characters * ? [ ] !"
        )
    return p


def clean_provider(provider: str | None) -> str:
    if provider is None:
        return ""
    p = provider.strip().lower()
    if not PROVIDER_RE.match(p):
        raise Invalid("provider must be 1-64 characters of a-z 0-9 . _ -")
    return p


def clean_price(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{name} must be a number (USD per 1M tokens)")
    v = float(value)
    if not math.isfinite(v) or not 0 <= v <= MAX_PRICE:
        raise Invalid(f"{name} must be between 0 and {MAX_PRICE:g} USD per 1M tokens")
    return v


class PriceOverrides:
    """CRUD of an org's overrides; `put` is an upsert keyed by (org, provider, model_pattern)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def list(self, org_id: str) -> list[PriceOverride]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(price_overrides)
                .where(price_overrides.c.org_id == org_id)
                .order_by(price_overrides.c.provider, price_overrides.c.model_pattern)
            ).all()
        return [_override(r) for r in rows]

    def all(self) -> list[PriceOverride]:
        """Every org's overrides (the lookup's refresh)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(price_overrides)).all()
        return [_override(r) for r in rows]

    def get(self, org_id: str, override_id: str) -> PriceOverride:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(price_overrides).where(
                    price_overrides.c.id == override_id, price_overrides.c.org_id == org_id
                )
            ).first()
        if row is None:
            raise NotFound("price override not found")
        return _override(row)

    def put(
        self,
        org_id: str,
        model_pattern: str,
        *,
        input: float,
        cached_input: float,
        cache_write: float,
        output: float,
        provider: str | None = None,
        note: str | None = None,
    ) -> tuple[PriceOverride, bool]:
        """Create or replace the org's override for (provider, model_pattern). Returns (row, created)."""
        pattern, prov = clean_pattern(model_pattern), clean_provider(provider)
        values = {
            name: clean_price(name, v)
            for name, v in zip(PRICE_FIELDS, (input, cached_input, cache_write, output), strict=True)
        }
        if note is not None and len(note) > 500:
            raise Invalid("note is longer than 500 characters")
        now = _now()
        key = (
            price_overrides.c.org_id == org_id,
            price_overrides.c.provider == prov,
            price_overrides.c.model_pattern == pattern,
        )
        for _ in range(2):  # an insert that loses a race to a concurrent put becomes an update
            with self.engine.begin() as conn:
                n = conn.execute(
                    update(price_overrides).where(*key).values(**values, note=note, updated_at=now)
                ).rowcount
            if n:
                return self._by_key(org_id, prov, pattern), False
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(price_overrides).values(
                            id=_new_id(),
                            org_id=org_id,
                            model_pattern=pattern,
                            provider=prov,
                            note=note,
                            created_at=now,
                            updated_at=now,
                            **values,
                        )
                    )
                return self._by_key(org_id, prov, pattern), True
            except IntegrityError:
                if not self._org_exists(org_id):
                    raise NotFound("organization not found") from None
        raise Conflict("the price override changed concurrently; try again")

    def delete(self, org_id: str, override_id: str) -> None:
        with self.engine.begin() as conn:
            n = conn.execute(
                delete(price_overrides).where(
                    price_overrides.c.id == override_id, price_overrides.c.org_id == org_id
                )
            ).rowcount
        if not n:
            raise NotFound("price override not found")

    def _by_key(self, org_id: str, provider: str, pattern: str) -> PriceOverride:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(price_overrides).where(
                    price_overrides.c.org_id == org_id,
                    price_overrides.c.provider == provider,
                    price_overrides.c.model_pattern == pattern,
                )
            ).one()
        return _override(row)

    def _org_exists(self, org_id: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(select(organizations.c.id).where(organizations.c.id == org_id)).first()
                is not None
            )


# --------------------------------------------------------------------------------------------- lookup


class _Compiled(NamedTuple):
    rx: re.Pattern[str]
    override: PriceOverride


def _specificity(o: PriceOverride) -> tuple[int, int, int, datetime]:
    wild = any(c in o.model_pattern for c in "*?[")
    return (0 if o.provider else 1, 1 if wild else 0, -len(o.model_pattern), o.created_at)


def matches(o: PriceOverride, rx: re.Pattern[str], provider: str, model: str) -> bool:
    if o.provider and o.provider != provider.strip().lower():
        return False
    return bool(rx.match(normalise_model(model)) or rx.match(model.strip().lower()))


class PriceLookup:
    """`lookup(org_id, provider, model)` → the org's winning PriceOverride, or None (the price book applies).

    Reads every override at most every `ttl_s`; thread-safe; the last good read stays in use when the
    control plane cannot be read. `converter` turns the override into what the caller needs (the stream
    worker passes core's `Prices`)."""

    def __init__(self, engine: Engine, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.repo = PriceOverrides(engine)
        self.ttl_s = ttl_s
        self._by_org: dict[str, list[_Compiled]] = {}
        self._hits: dict[tuple[str, str, str], PriceOverride | None] = {}
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            self._checked_at = time.monotonic()
            try:
                rows = self.repo.all()
            except SQLAlchemyError as exc:
                log.warning("cannot read the price overrides, keeping the last read: %s", exc)
                return
            by_org: dict[str, list[_Compiled]] = {}
            for o in sorted(rows, key=_specificity):
                by_org.setdefault(o.org_id, []).append(
                    _Compiled(re.compile(fnmatch.translate(o.model_pattern)), o)
                )
            self._by_org, self._hits = by_org, {}

    def find(self, org_id: str, provider: str, model: str) -> PriceOverride | None:
        if time.monotonic() - self._checked_at >= self.ttl_s:
            self.refresh()
        candidates = self._by_org.get(org_id)
        if not candidates:
            return None
        key = (org_id, provider, model)
        hits = self._hits
        if key in hits:
            return hits[key]
        found = next((c.override for c in candidates if matches(c.override, c.rx, provider, model)), None)
        if len(hits) > 50_000:
            hits.clear()
        hits[key] = found
        return found

    def using(self, converter: Callable[[PriceOverride], T]) -> Callable[[str, str, str], T | None]:
        """The lookup as `(org_id, provider, model) -> converter(override) | None`."""

        def lookup(org_id: str, provider: str, model: str) -> T | None:
            o = self.find(org_id, provider, model)
            return None if o is None else converter(o)

        return lookup

    def prices(self) -> Callable[[str, str, str], Prices | None]:
        """The lookup in core's terms, as the enrichment takes it: `(org_id, provider, model) -> Prices | None`."""
        return self.using(as_prices)


def as_prices(o: PriceOverride) -> Prices:
    """The override as core's `Prices` (what `enrich` takes)."""
    return Prices(o.input, o.cached_input, o.cache_write, o.output, o.source)
