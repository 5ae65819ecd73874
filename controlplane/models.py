"""Typed results of the control-plane repositories (pydantic, frozen)."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from core.methodology import FactorSet

PlanTier = Literal["free", "starter", "growth", "scale", "enterprise"]
Scope = Literal["read", "ingest", "admin", "billing"]
WorkloadKind = Literal["connection", "gateway_key"]


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class Org(_Row):
    id: str
    slug: str
    name: str
    plan_tier: PlanTier
    stripe_customer_id: str | None
    created_at: datetime


class ApiKey(_Row):
    """An API key as stored: never the plaintext, never the hash."""

    id: str
    org_id: str
    name: str
    prefix: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def is_usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class Project(_Row):
    id: str
    org_id: str
    name: str
    is_default: bool
    created_at: datetime
    deleted_at: datetime | None = None
    workload_count: int = 0  # active workloads


class Workload(_Row):
    id: str
    org_id: str
    project_id: str
    kind: WorkloadKind
    ref_id: str
    is_active: bool
    created_at: datetime
    deactivated_at: datetime | None


class FactorVersion(BaseModel):
    """One published carbon factor set; `body` is the YAML exactly as published."""

    model_config = ConfigDict(frozen=True, from_attributes=True, ignored_types=(cached_property,))

    version: str
    published_at: datetime
    body: str
    tier_count: int
    created_at: datetime

    @cached_property
    def factor_set(self) -> FactorSet:
        return _parse_factor_set(self.body)


@lru_cache(maxsize=16)
def _parse_factor_set(body: str) -> FactorSet:
    """Parsed factor sets by YAML text: a version is immutable, so every read of it parses once."""
    from core.methodology import parse_factor_set

    return parse_factor_set(body)
