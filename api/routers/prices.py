"""Per-org price overrides ("custom prices"): /api/v1/price-overrides. Read with scope `read`, change with
scope `admin`.

An override gives the org's own USD per 1M tokens (uncached input, cached input, cache write, output) for the
models matching `model_pattern` (an fnmatch glob, case-insensitive, matched like the factor set's model
patterns), at one `provider` or at every provider (omitted). Enrichment uses it instead of the factor set's
price book for `cost_usd`, and names it in `price_source`; the stream worker picks a change up within 10 s.
Events already stored keep their cost until re-enriched (`joulestream reenrich`).

`PUT /price-overrides` is an upsert keyed by (provider, model_pattern): 201 when it created the override,
200 when it replaced one. Another org's override id is 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AdminPrincipal, Ctx, ReadPrincipal
from api.errors import error_responses
from controlplane.prices import MAX_PRICE, PriceOverride, PriceOverrides

router = APIRouter(prefix="/price-overrides", tags=["prices"], responses=error_responses(401, 403))

OverrideId = Annotated[str, Path(min_length=1, max_length=64, description="Price override id (uuid)")]
Price = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False, description="USD per 1M tokens")]


class PriceOverrideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_pattern: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^\s*[A-Za-z0-9._:/@*?\[\]!+-]{1,200}\s*$",
        description="fnmatch glob on the model name, case-insensitive (e.g. gpt-4o*)",
        examples=["gpt-4o*"],
    )
    provider: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^\s*[A-Za-z0-9._-]{1,64}\s*$",
        description="Only at this provider (e.g. azure); omitted = at every provider",
    )
    input: Price = Field(description="USD per 1M uncached input tokens")
    cached_input: Price = Field(description="USD per 1M input tokens read from the prompt cache")
    cache_write: Price = Field(description="USD per 1M input tokens written to the prompt cache")
    output: Price = Field(description="USD per 1M output tokens (incl. reasoning tokens)")
    note: str | None = Field(default=None, max_length=500, examples=["2026 enterprise agreement"])


class PriceOverrideOut(BaseModel):
    id: str
    model_pattern: str
    provider: str | None
    input: float
    cached_input: float
    cache_write: float
    output: float
    note: str | None
    price_source: str = Field(description="What enriched events record as price_source when it applies")
    created_at: datetime
    updated_at: datetime


class PriceOverrideList(BaseModel):
    price_overrides: list[PriceOverrideOut]


def _out(o: PriceOverride) -> PriceOverrideOut:
    return PriceOverrideOut(
        id=o.id,
        model_pattern=o.model_pattern,
        provider=o.provider,
        input=o.input,
        cached_input=o.cached_input,
        cache_write=o.cache_write,
        output=o.output,
        note=o.note,
        price_source=o.source,
        created_at=o.created_at,
        updated_at=o.updated_at,
    )


@router.get("", response_model=PriceOverrideList, summary="The org's price overrides")
async def list_overrides(ctx: Ctx, principal: ReadPrincipal) -> PriceOverrideList:
    rows = await run_in_threadpool(PriceOverrides(ctx.engine).list, principal.org_id)
    return PriceOverrideList(price_overrides=[_out(o) for o in rows])


@router.put(
    "",
    status_code=201,
    response_model=PriceOverrideOut,
    responses={200: {"model": PriceOverrideOut, "description": "Replaced"}, **error_responses(400)},
    summary="Create (201) or replace (200) the org's override for a provider and model pattern",
)
def put_override(
    body: PriceOverrideIn, ctx: Ctx, principal: AdminPrincipal, response: Response
) -> PriceOverrideOut:
    o, created = PriceOverrides(ctx.engine).put(
        principal.org_id,
        body.model_pattern,
        provider=body.provider,
        input=body.input,
        cached_input=body.cached_input,
        cache_write=body.cache_write,
        output=body.output,
        note=body.note,
    )
    response.status_code = 201 if created else 200
    return _out(o)


@router.get(
    "/{override_id}",
    response_model=PriceOverrideOut,
    responses=error_responses(404),
    summary="One price override",
)
def get_override(override_id: OverrideId, ctx: Ctx, principal: ReadPrincipal) -> PriceOverrideOut:
    return _out(PriceOverrides(ctx.engine).get(principal.org_id, override_id))


@router.delete(
    "/{override_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404),
    summary="Delete a price override (the price book applies again)",
)
def delete_override(override_id: OverrideId, ctx: Ctx, principal: AdminPrincipal) -> Response:
    PriceOverrides(ctx.engine).delete(principal.org_id, override_id)
    return Response(status_code=204)
