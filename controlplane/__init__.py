"""Control plane: orgs, API keys, projects, workloads and carbon factor versions in SQL (SQLAlchemy 2 Core,
Alembic migrations in `migrations/`). SQLite by default, PostgreSQL in production — the same code.

    engine = get_engine(settings.database)   # cached per URL
    upgrade(engine)                          # idempotent, run on every start
    org = Orgs(engine).create("acme")
    key, plaintext = ApiKeys(engine).create(org.id, ["read"])
"""

from controlplane.db import current_revision, dispose_engine, get_engine, head_revision, upgrade
from controlplane.errors import Conflict, ControlPlaneError, Invalid, NotFound
from controlplane.models import ApiKey, FactorVersion, Org, Project, Workload
from controlplane.repos import (
    DEFAULT_PROJECT_NAME,
    KEY_PREFIX,
    ApiKeys,
    FactorVersions,
    Orgs,
    Projects,
    Workloads,
    hash_key,
    normalise_scopes,
)
from controlplane.schema import PLAN_TIERS, SCOPES, WORKLOAD_KINDS

__all__ = [
    "DEFAULT_PROJECT_NAME",
    "KEY_PREFIX",
    "PLAN_TIERS",
    "SCOPES",
    "WORKLOAD_KINDS",
    "ApiKey",
    "ApiKeys",
    "Conflict",
    "ControlPlaneError",
    "FactorVersion",
    "FactorVersions",
    "Invalid",
    "NotFound",
    "Org",
    "Orgs",
    "Project",
    "Projects",
    "Workload",
    "Workloads",
    "current_revision",
    "dispose_engine",
    "get_engine",
    "hash_key",
    "head_revision",
    "normalise_scopes",
    "upgrade",
]
