"""Control plane: orgs, API keys, projects, workloads, carbon factor versions, provider connections, the
gateway's balances and receipts, and billing, in SQL (SQLAlchemy 2 Core; every table in `schema.py`, Alembic
migrations in `migrations/`). SQLite by default, PostgreSQL in production — the same code.

    engine = get_engine(settings.database)   # cached per URL
    upgrade(engine)                          # `joulestream migrate` (idempotent): a step, not a side effect
    org = Orgs(engine).create("acme")
    key, plaintext = ApiKeys(engine).create(org.id, ["read"])
"""

from controlplane.db import current_revision, dispose_engine, get_engine, head_revision, upgrade
from controlplane.errors import Conflict, ControlPlaneError, Invalid, NotFound
from controlplane.factors import FactorVersions
from controlplane.keys import KEY_PREFIX, ApiKeys, hash_key, normalise_scopes
from controlplane.models import ApiKey, FactorVersion, Org, Project, Workload
from controlplane.orgs import Orgs
from controlplane.projects import DEFAULT_PROJECT_NAME, Projects
from controlplane.schema import PLAN_TIERS, SCOPES, WORKLOAD_KINDS
from controlplane.workloads import Workloads

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
