"""The Batch API's HTTP routes on the gateway, in OpenAI's shapes (docs/batch.md):

    POST   /v1/files                  multipart: file (JSONL), purpose=batch
    GET    /v1/files/{id}             the file object
    GET    /v1/files/{id}/content     its bytes (inputs, and the output/error files of batches)
    DELETE /v1/files/{id}
    POST   /v1/batches                {input_file_id, endpoint, completion_window: "24h", metadata}
    GET    /v1/batches                ?after=&limit= (newest first; OpenAI's list object)
    GET    /v1/batches/{id}
    POST   /v1/batches/{id}/cancel
    GET    /v1/intensity-profiles     the loaded hourly grid-intensity profiles (read)
    PUT    /v1/intensity-profiles     CSV body (core/intensity.py), replaces the regions it names (admin)

Creating needs the `ingest` scope (the lines run as the creating key); reading `ingest` or `read`. Every
object is scoped by the caller's org: another org's id is a 404. The runner (`batch_runner.py`) does the work.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile
from starlette.responses import Response

from controlplane._util import now as _now
from controlplane.batches import Batches, BatchFile, BatchFiles, IntensityProfiles
from controlplane.errors import Conflict
from core.artifacts import ArtifactStore
from core.intensity import ProfileError, parse_profile_csv
from core.settings import Settings
from pipelines.gateway.auth import Authenticator, Caller
from pipelines.gateway.batch_format import batch_object, file_object, parse_jsonl
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.schemas import describe_errors

READ = ("ingest", "read")


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=40)
    endpoint: Literal["/v1/chat/completions", "/v1/embeddings", "/v1/completions"]
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        if len(v) > 16:
            raise ValueError("at most 16 keys")
        for k, val in v.items():
            if len(k) > 64 or len(val) > 512:
                raise ValueError("keys at most 64 and values at most 512 characters")
        return v


def _answers(fn: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """A route whose GatewayError becomes its OpenAI-shaped answer."""

    @functools.wraps(fn)
    async def route(*args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(*args, **kwargs)
        except GatewayError as err:
            return err.response()

    return route


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _not_found(kind: str, ident: str) -> GatewayError:
    return GatewayError(404, f"No such {kind}: {ident[:100]!r}.", param="id", code=f"{kind}_not_found")


def input_key(org_id: str, file_id: str) -> str:
    return f"batch-files/{org_id}/{file_id}.jsonl"


def batch_router(settings: Settings, auth: Authenticator, engine: Any, store: ArtifactStore) -> APIRouter:
    files, batches, profiles = BatchFiles(engine), Batches(engine), IntensityProfiles(engine)
    router = APIRouter(tags=["batch"])

    async def who(request: Request, scope: str | tuple[str, ...]) -> Caller:
        return await auth.caller(request.headers.get("authorization"), scope=scope)

    @router.post("/v1/files", summary="Upload a batch input file (multipart: file, purpose=batch)")
    @_answers
    async def upload(request: Request) -> Response:
        caller = await who(request, "ingest")
        length = request.headers.get("content-length")
        limit = settings.batch_max_file_bytes
        if length is not None and length.isdigit() and int(length) > limit + 64 * 1024:
            raise GatewayError(
                413, f"The file is larger than {limit} bytes.", param="file", code="file_too_large"
            )
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception:  # noqa: BLE001 - any malformed multipart body
            raise GatewayError(
                400, "Send multipart/form-data with `file` and `purpose`.", code="invalid_multipart"
            ) from None
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "batch":
            raise GatewayError(400, "purpose must be 'batch'.", param="purpose", code="invalid_purpose")
        if not isinstance(upload, UploadFile):
            raise GatewayError(400, "A `file` part is required.", param="file", code="missing_file")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise GatewayError(
                413, f"The file is larger than {limit} bytes.", param="file", code="file_too_large"
            )
        lines = await asyncio.to_thread(parse_jsonl, data, settings.batch_max_lines)
        file_id = f"file-{secrets.token_hex(12)}"
        key = input_key(caller.org_id, file_id)
        sha = await asyncio.to_thread(store.put, key, data, "application/jsonl")
        f = BatchFile(
            id=file_id,
            org_id=caller.org_id,
            purpose="batch",
            filename=(upload.filename or "batch.jsonl")[:255],
            bytes=len(data),
            line_count=len(lines),
            storage_key=key,
            sha256=sha,
            created_at=_now(),
        )
        await asyncio.to_thread(files.add, f)
        return _json(file_object(f))

    @router.get("/v1/files/{file_id}", summary="A file object")
    @_answers
    async def get_file(file_id: str, request: Request) -> Response:
        caller = await who(request, READ)
        f = await asyncio.to_thread(files.get, caller.org_id, file_id)
        if f is None:
            raise _not_found("file", file_id)
        return _json(file_object(f))

    @router.get("/v1/files/{file_id}/content", summary="A file's content")
    @_answers
    async def file_content(file_id: str, request: Request) -> Response:
        caller = await who(request, READ)
        f = await asyncio.to_thread(files.get, caller.org_id, file_id)
        data = None if f is None else await asyncio.to_thread(store.get, f.storage_key)
        if data is None:
            raise _not_found("file", file_id)
        return Response(data, media_type="application/jsonl")

    @router.delete("/v1/files/{file_id}", summary="Delete a file")
    @_answers
    async def delete_file(file_id: str, request: Request) -> Response:
        caller = await who(request, "ingest")
        f = await asyncio.to_thread(files.delete, caller.org_id, file_id)
        if f is None:
            raise _not_found("file", file_id)
        await asyncio.to_thread(store.delete, f.storage_key)
        return _json({"id": file_id, "object": "file", "deleted": True})

    @router.post("/v1/batches", summary="Create a batch from an uploaded input file")
    @_answers
    async def create_batch(request: Request) -> Response:
        caller = await who(request, "ingest")
        try:
            body = CreateBatch.model_validate_json(await request.body())
        except ValidationError as exc:
            message, param = describe_errors(exc)
            raise GatewayError(422, message, param=param, code="invalid_body") from None
        f = await asyncio.to_thread(files.get, caller.org_id, body.input_file_id)
        if f is None or f.purpose != "batch":
            raise GatewayError(
                404,
                f"No batch input file {body.input_file_id!r}.",
                param="input_file_id",
                code="file_not_found",
            )
        created = _now()
        b = await asyncio.to_thread(
            batches.create,
            id=f"batch_{secrets.token_hex(12)}",
            org_id=caller.org_id,
            key_id=caller.key_id,
            endpoint=body.endpoint,
            input_file_id=f.id,
            completion_window=body.completion_window,
            status="validating",
            batch_metadata=None if body.metadata is None else orjson.dumps(body.metadata).decode(),
            total=f.line_count,
            created_at=created,
            expires_at=created + timedelta(hours=24),
        )
        return _json(batch_object(b))

    @router.get("/v1/batches", summary="The org's batches, newest first (after=, limit=)")
    @_answers
    async def list_batches(request: Request, after: str | None = None, limit: int = 20) -> Response:
        caller = await who(request, READ)
        if not 1 <= limit <= 100:
            raise GatewayError(400, "limit must be between 1 and 100.", param="limit", code="invalid_limit")
        rows, more = await asyncio.to_thread(batches.page, caller.org_id, after, limit)
        data = [batch_object(b) for b in rows]
        return _json(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        )

    @router.get("/v1/batches/{batch_id}", summary="A batch")
    @_answers
    async def get_batch(batch_id: str, request: Request) -> Response:
        caller = await who(request, READ)
        b = await asyncio.to_thread(batches.get, caller.org_id, batch_id)
        if b is None:
            raise _not_found("batch", batch_id)
        return _json(batch_object(b))

    @router.post("/v1/batches/{batch_id}/cancel", summary="Cancel a batch (cancelling → cancelled)")
    @_answers
    async def cancel_batch(batch_id: str, request: Request) -> Response:
        caller = await who(request, "ingest")
        try:
            b = await asyncio.to_thread(batches.cancel, caller.org_id, batch_id)
        except Conflict as exc:
            raise GatewayError(409, str(exc), code="batch_not_cancellable") from None
        if b is None:
            raise _not_found("batch", batch_id)
        return _json(batch_object(b))

    @router.get("/v1/intensity-profiles", summary="Hourly grid-intensity profiles per region (UTC hours)")
    @_answers
    async def get_profiles(request: Request) -> Response:
        await who(request, READ)
        rows = await asyncio.to_thread(profiles.all)
        return _json({"object": "list", "data": [p.model_dump() for p in rows]})

    @router.put(
        "/v1/intensity-profiles", summary="Load profiles from CSV (region,hour_utc,intensity_kg_per_kwh)"
    )
    @_answers
    async def put_profiles(request: Request) -> Response:
        await who(request, "admin")
        raw = await request.body()
        if len(raw) > 1 << 20:
            raise GatewayError(413, "The profile CSV is larger than 1 MiB.", code="body_too_large")
        try:
            parsed = parse_profile_csv(raw.decode("utf-8", errors="replace"))
        except ProfileError as exc:
            raise GatewayError(400, str(exc), param="body", code="invalid_profile") from None
        n = await asyncio.to_thread(profiles.load, parsed)
        return _json({"object": "list", "loaded_regions": n, "data": [p.model_dump() for p in parsed]})

    return router
