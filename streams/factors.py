"""The enrich agent's factor sets: the shared `controlplane.factor_resolver.FactorResolver`.

`worker_factors` prepares the control plane the way the worker always has (migrations, the built-in v1.0
published so `joulestream factors list` shows it) and returns the resolver. Enrichment applies its current
set, except to gateway events, which carry the version their receipt used (`FACTORS_VERSION_LABEL`).
"""

from __future__ import annotations

from sqlalchemy import Engine

from controlplane import FactorVersions, upgrade
from controlplane.factor_resolver import DEFAULT_TTL_S, FactorResolver


def worker_factors(engine: Engine, ttl_s: float = DEFAULT_TTL_S) -> FactorResolver:
    """Migrate and seed the control plane, then the resolver the enrich agent reads factor sets from."""
    upgrade(engine)
    FactorVersions(engine).ensure_seeded()
    return FactorResolver(engine, ttl_s)
