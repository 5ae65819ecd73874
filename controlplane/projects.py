"""Projects of an org: the Default project (created on first use), create, rename, soft delete.

A project is soft-deleted (`deleted_at`): telemetry keeps pointing at its id, so its name stays resolvable
(`names`). Tenancy: every method takes `org_id`; another org's id is indistinguishable from an unknown one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import Conflict, Invalid, NotFound
from controlplane.models import Project
from controlplane.schema import projects, workloads

DEFAULT_PROJECT_NAME = "Default"
_NAME_MAX = 100


def clean_project_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise Invalid("project name must not be blank")
    if len(cleaned) > _NAME_MAX:
        raise Invalid(f"project name is longer than {_NAME_MAX} characters")
    return cleaned


_live = projects.c.deleted_at.is_(None)
_workload_count = (
    select(func.count(workloads.c.id))
    .where(workloads.c.project_id == projects.c.id, workloads.c.is_active.is_(True))
    .correlate(projects)
    .scalar_subquery()
    .label("workload_count")
)


class Projects:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ensure_default_project(self, org_id: str) -> Project:
        """The org's Default project, created on first use (safe under concurrent callers)."""
        found = self._select_one(projects.c.org_id == org_id, projects.c.is_default.is_(True), _live)
        if found:
            return found
        row = {
            "id": _new_id(),
            "org_id": org_id,
            "name": DEFAULT_PROJECT_NAME,
            "is_default": True,
            "created_at": _now(),
            "deleted_at": None,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(projects).values(**row))
        except IntegrityError as exc:  # lost a race (or the org does not exist)
            found = self._select_one(projects.c.org_id == org_id, projects.c.is_default.is_(True), _live)
            if found:
                return found
            raise NotFound("organization not found") from exc
        return Project(**row)

    def create(self, org_id: str, name: str) -> Project:
        name = clean_project_name(name)
        self.ensure_default_project(org_id)  # "Default" is always taken by the default project
        row = {
            "id": _new_id(),
            "org_id": org_id,
            "name": name,
            "is_default": False,
            "created_at": _now(),
            "deleted_at": None,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(projects).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"a project named {name!r} already exists in this organization") from exc
        return Project(**row)

    def get(self, org_id: str, project_id: str) -> Project | None:
        """A live project of `org_id` (None for unknown, deleted, or another org's id)."""
        return self._select_one(projects.c.org_id == org_id, projects.c.id == project_id, _live)

    def list(self, org_id: str, *, offset: int = 0, limit: int | None = None) -> list[Project]:
        """Live projects, Default first, then by creation time."""
        stmt = (
            select(projects, _workload_count)
            .where(projects.c.org_id == org_id, _live)
            .order_by(projects.c.is_default.desc(), projects.c.created_at, projects.c.id)
            .offset(offset)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [Project.model_validate(dict(r)) for r in conn.execute(stmt).mappings().all()]

    def count(self, org_id: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(projects).where(projects.c.org_id == org_id, _live)
            ).scalar_one()

    def names(self, org_id: str, *, include_deleted: bool = True) -> dict[str, str]:
        """project id → name, including deleted projects (telemetry still points at them)."""
        cond = projects.c.org_id == org_id if include_deleted else and_(projects.c.org_id == org_id, _live)
        with self.engine.connect() as conn:
            return {r.id: r.name for r in conn.execute(select(projects.c.id, projects.c.name).where(cond))}

    def rename(self, org_id: str, project_id: str, name: str) -> Project:
        name = clean_project_name(name)
        current = self.get(org_id, project_id)
        if current is None:
            raise NotFound("project not found")
        if current.name == name:
            return current
        if current.is_default:
            raise Invalid("the Default project cannot be renamed")
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(projects)
                    .where(projects.c.id == project_id, projects.c.org_id == org_id, _live)
                    .values(name=name)
                )
        except IntegrityError as exc:
            raise Conflict(f"a project named {name!r} already exists in this organization") from exc
        updated = self.get(org_id, project_id)
        if updated is None:
            raise NotFound("project not found")
        return updated

    def delete(self, org_id: str, project_id: str, now: datetime | None = None) -> None:
        """Soft-delete a project. The Default project cannot be deleted; active workloads must be re-mapped
        first. Inactive workloads (history) keep pointing at the deleted project."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(projects.c.is_default).where(
                    projects.c.org_id == org_id, projects.c.id == project_id, _live
                )
            ).first()
            if row is None:
                raise NotFound("project not found")
            if row.is_default:
                raise Invalid("the Default project cannot be deleted")
            # The guarded UPDATE re-checks "no active workload" atomically with the delete.
            active = (
                select(workloads.c.id)
                .where(workloads.c.project_id == project_id, workloads.c.is_active.is_(True))
                .exists()
            )
            n = conn.execute(
                update(projects)
                .where(projects.c.id == project_id, projects.c.org_id == org_id, _live, ~active)
                .values(deleted_at=now or _now())
            ).rowcount
            if not n:
                raise Conflict("the project still has active workloads; re-map them to another project first")

    def _select_one(self, *conds) -> Project | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(projects, _workload_count).where(*conds)).mappings().first()
        return Project.model_validate(dict(row)) if row else None
