"""The enrich agent's factor sets: the shared `controlplane.factor_resolver.FactorResolver`.

`worker_factors` prepares the control plane the way the worker always has (the built-in v1.0
published so `joulestream factors list` shows it) and returns the resolver. Enrichment applies its current
set, except to gateway events, which carry the version their receipt used (`FACTORS_VERSION_LABEL`).
"""

from __future__ import annotations

from sqlalchemy import Engine

from controlplane import FactorVersions
from controlplane.factor_resolver import DEFAULT_TTL_S, FactorResolver


def worker_factors(engine: Engine, ttl_s: float = DEFAULT_TTL_S) -> FactorResolver:
    """Seed the (already migrated) control plane with the built-in factor set, then the resolver the enrich
    agent reads factor sets from."""
    FactorVersions(engine).ensure_seeded()
    return FactorResolver(engine, ttl_s)
