"""Workloads: where a usage source (a provider connection or a gateway API key) books its usage."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import Conflict, Invalid, NotFound
from controlplane.models import Workload
from controlplane.projects import Projects
from controlplane.schema import WORKLOAD_KINDS, workloads


class Workloads:
    """Where a usage source (a provider connection or a gateway API key) books its usage. A source has at
    most one active workload; re-mapping deactivates it and creates a new one, so history stays on the
    old workload (and its project) and only future events go to the new one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, org_id: str, project_id: str, kind: str, ref_id: str) -> Workload:
        self._check(org_id, project_id, kind)
        row = self._row(org_id, project_id, kind, ref_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(workloads).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"{kind} {ref_id!r} already has an active workload") from exc
        return Workload(**row)

    def ensure_active(self, org_id: str, kind: str, ref_id: str) -> Workload:
        """The active workload of a source, mapped to the Default project when it has none yet."""
        found = self.active(org_id, kind, ref_id)
        if found:
            return found
        default = Projects(self.engine).ensure_default_project(org_id)
        try:
            return self.create(org_id, default.id, kind, ref_id)
        except Conflict:
            found = self.active(org_id, kind, ref_id)
            if found is None:
                raise
            return found

    def get(self, org_id: str, workload_id: str) -> Workload | None:
        return self._one(workloads.c.org_id == org_id, workloads.c.id == workload_id)

    def active(self, org_id: str, kind: str, ref_id: str) -> Workload | None:
        return self._one(
            workloads.c.org_id == org_id,
            workloads.c.kind == kind,
            workloads.c.ref_id == ref_id,
            workloads.c.is_active.is_(True),
        )

    def list(
        self, org_id: str, project_id: str | None = None, *, active_only: bool = False
    ) -> list[Workload]:
        conds = [workloads.c.org_id == org_id]
        if project_id is not None:
            conds.append(workloads.c.project_id == project_id)
        if active_only:
            conds.append(workloads.c.is_active.is_(True))
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(workloads).where(*conds).order_by(workloads.c.created_at, workloads.c.id))
                .mappings()
                .all()
            )
        return [Workload.model_validate(dict(r)) for r in rows]

    def remap(
        self, org_id: str, kind: str, ref_id: str, project_id: str, now: datetime | None = None
    ) -> Workload:
        """Point a source at `project_id`: deactivate its active workload (if any) and create a new one.
        A no-op returning the active workload when it already points there."""
        self._check(org_id, project_id, kind)
        now = now or _now()
        new = self._row(org_id, project_id, kind, ref_id, now)
        try:
            with self.engine.begin() as conn:
                current = (
                    conn.execute(
                        select(workloads).where(
                            workloads.c.org_id == org_id,
                            workloads.c.kind == kind,
                            workloads.c.ref_id == ref_id,
                            workloads.c.is_active.is_(True),
                        )
                    )
                    .mappings()
                    .first()
                )
                if current is not None and current["project_id"] == project_id:
                    return Workload.model_validate(dict(current))
                if current is not None:
                    conn.execute(
                        update(workloads)
                        .where(workloads.c.id == current["id"])
                        .values(is_active=False, deactivated_at=now)
                    )
                conn.execute(insert(workloads).values(**new))
        except IntegrityError as exc:
            raise Conflict(f"{kind} {ref_id!r} was re-mapped concurrently; retry") from exc
        return Workload(**new)

    def _check(self, org_id: str, project_id: str, kind: str) -> None:
        if kind not in WORKLOAD_KINDS:
            raise Invalid(f"unknown workload kind {kind!r}; kinds: {', '.join(WORKLOAD_KINDS)}")
        if Projects(self.engine).get(org_id, project_id) is None:
            raise NotFound("project not found")

    @staticmethod
    def _row(org_id: str, project_id: str, kind: str, ref_id: str, now: datetime | None = None) -> dict:
        return {
            "id": _new_id(),
            "org_id": org_id,
            "project_id": project_id,
            "kind": kind,
            "ref_id": ref_id,
            "is_active": True,
            "created_at": now or _now(),
            "deactivated_at": None,
        }

    def _one(self, *conds) -> Workload | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(workloads).where(*conds)).mappings().first()
        return Workload.model_validate(dict(row)) if row else None
