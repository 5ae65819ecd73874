"""Projects: /api/v1/projects. Read with scope `read`, change with scope `admin`.

Rules: every org has a Default project (created on first use) that cannot be renamed or deleted (400);
names are unique per org (409); a project with active workloads cannot be deleted (409, re-map them
first); another org's project id is 404. CO2 figures come from the injected telemetry provider.
"""

from __future__ import annotations

import inspect
import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import AdminPrincipal, AppContext, Ctx, Dates, Page, ReadPrincipal
from api.errors import error_responses
from controlplane import NotFound, Project

router = APIRouter(prefix="/projects", tags=["projects"], responses=error_responses(401, 403))
log = logging.getLogger("joulestream.api.projects")

ProjectId = Annotated[str, Path(min_length=1, max_length=64, description="Project id (uuid)")]


class ProjectName(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, examples=["Production App"])

    @field_validator("name")
    @classmethod
    def _clean(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v:
            raise ValueError("must not be blank")
        return v


class ProjectOut(BaseModel):
    id: str
    name: str
    is_default: bool
    workload_count: int
    total_co2_kg: float
    created_at: datetime


class Pagination(BaseModel):
    page: int
    page_size: int
    total_items: int
    total_pages: int


class ProjectList(BaseModel):
    projects: list[ProjectOut]
    pagination: Pagination
    period: dict[str, str]


class WorkloadOut(BaseModel):
    id: str
    kind: str
    ref_id: str
    created_at: datetime


class ConnectionRef(BaseModel):
    id: str
    workload_id: str


class ProjectDetail(BaseModel):
    id: str
    name: str
    is_default: bool
    workload_count: int
    connections: list[ConnectionRef]
    workloads: list[WorkloadOut]
    summary: dict[str, Any]
    period: dict[str, str]
    created_at: datetime


async def _telemetry(fn, *args) -> Any:
    """Call the provider (sync in a thread, or async); its failures answer 503, not 500."""
    try:
        result = await run_in_threadpool(fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result
    except Exception as exc:
        log.error("telemetry provider failed: %s", exc, exc_info=True)
        raise HTTPException(503, "telemetry store unavailable, retry later") from exc


def _out(p: Project, co2: float = 0.0) -> ProjectOut:
    return ProjectOut(
        id=p.id,
        name=p.name,
        is_default=p.is_default,
        workload_count=p.workload_count,
        total_co2_kg=float(co2 or 0.0),
        created_at=p.created_at,
    )


def _get(ctx: AppContext, org_id: str, project_id: str) -> Project:
    project = ctx.projects.get(org_id, project_id)
    if project is None:
        raise NotFound("project not found")
    return project


@router.post(
    "", status_code=201, response_model=ProjectOut, responses=error_responses(409), summary="Create a project"
)
def create_project(body: ProjectName, ctx: Ctx, principal: AdminPrincipal) -> ProjectOut:
    return _out(ctx.projects.create(principal.org_id, body.name))


@router.get("", response_model=ProjectList, responses=error_responses(503), summary="List the org's projects")
async def list_projects(ctx: Ctx, principal: ReadPrincipal, page: Page, dates: Dates) -> ProjectList:
    def load() -> tuple[list[Project], int]:
        ctx.projects.ensure_default_project(principal.org_id)
        items = ctx.projects.list(principal.org_id, offset=page.offset, limit=page.page_size)
        return items, ctx.projects.count(principal.org_id)

    items, total = await run_in_threadpool(load)
    totals = (
        await _telemetry(
            ctx.telemetry.project_totals, principal.org_id, [p.id for p in items], dates.start, dates.end
        )
        if items
        else {}
    )
    return ProjectList(
        projects=[_out(p, totals.get(p.id, 0.0)) for p in items],
        pagination=Pagination(**page.info(total)),
        period=dates.as_dict(),
    )


@router.get(
    "/{project_id}",
    response_model=ProjectDetail,
    responses=error_responses(404, 503),
    summary="Project detail with its telemetry summary",
)
async def get_project(
    project_id: ProjectId, ctx: Ctx, principal: ReadPrincipal, dates: Dates
) -> ProjectDetail:
    def load():
        project = _get(ctx, principal.org_id, project_id)
        return project, ctx.workloads.list(principal.org_id, project.id, active_only=True)

    project, workloads = await run_in_threadpool(load)
    summary = await _telemetry(ctx.telemetry.summary, principal.org_id, project.id, dates.start, dates.end)
    return ProjectDetail(
        id=project.id,
        name=project.name,
        is_default=project.is_default,
        workload_count=project.workload_count,
        connections=[
            ConnectionRef(id=w.ref_id, workload_id=w.id) for w in workloads if w.kind == "connection"
        ],
        workloads=[
            WorkloadOut(id=w.id, kind=w.kind, ref_id=w.ref_id, created_at=w.created_at) for w in workloads
        ],
        summary=dict(summary or {}),
        period=dates.as_dict(),
        created_at=project.created_at,
    )


@router.patch(
    "/{project_id}",
    response_model=ProjectOut,
    responses=error_responses(400, 404, 409),
    summary="Rename a project (not the Default one)",
)
def rename_project(
    project_id: ProjectId, body: ProjectName, ctx: Ctx, principal: AdminPrincipal
) -> ProjectOut:
    return _out(ctx.projects.rename(principal.org_id, project_id, body.name))


@router.delete(
    "/{project_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(400, 404, 409),
    summary="Delete a project (not the Default one; re-map its workloads first)",
)
def delete_project(project_id: ProjectId, ctx: Ctx, principal: AdminPrincipal) -> Response:
    ctx.projects.delete(principal.org_id, project_id)
    return Response(status_code=204)
