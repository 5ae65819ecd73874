"""The error model: every error body is `{"detail": …}`.

- HTTP errors: `{"detail": "message"}` (with the exception's headers, e.g. `WWW-Authenticate`).
- 422: FastAPI's field-error list in `detail` (`[{"type", "loc", "msg", "input", …}]`), bounded: each
  `input` is echoed as a preview of at most ~200 characters (a long string cut, a nested object summarised),
  every other text field is cut too, and the list stops before the body passes 4 KB — a rejected 1 MB body
  never comes back as a 1 MB answer.
- 413: a request body over `JOULESTREAM_API_MAX_BODY_BYTES` (api/bodylimit.py).
- Control-plane rule errors: NotFound → 404, Conflict → 409, Invalid → 400.
- Anything else: logged with the request id, answered `500 {"detail": "internal error", "request_id": …}`
  — never a traceback or an exception message.

Every response carries `X-Request-ID` (the caller's, when it sent a sane one, else a new one).
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.bodylimit import BodyLimitMiddleware
from controlplane.errors import Conflict, Invalid, NotFound

log = logging.getLogger("joulestream.api")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


INPUT_PREVIEW_CHARS = 200
TEXT_CHARS = 300
MAX_422_BYTES = 4096


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters (and a note of the length), lone surrogates escaped (not UTF-8)."""
    cut = text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def _preview(value: Any) -> Any:
    """A short, JSON-safe stand-in for an echoed input: scalars as they are (strings cut), containers as
    their compact JSON cut to INPUT_PREVIEW_CHARS — never a recursive walk (a body may nest 1,000 deep)."""
    if isinstance(value, float) and not math.isfinite(value):  # 1e999 parses as inf: not JSON
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value if not isinstance(value, int) or abs(value) < 1 << 63 else _cut(str(value), 40)
    if isinstance(value, str):
        return _cut(value, INPUT_PREVIEW_CHARS)
    if isinstance(value, bytes):
        return _cut(value.decode("utf-8", "replace"), INPUT_PREVIEW_CHARS)
    try:
        text = orjson.dumps(value, default=str).decode()
    except (TypeError, orjson.JSONEncodeError, RecursionError):  # too deep, or not JSON at all
        size = f" of {len(value)} items" if isinstance(value, dict | list | tuple) else ""
        text = f"<{type(value).__name__}{size}, not shown>"
    return _cut(text, INPUT_PREVIEW_CHARS)


def _safe_error(err: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in err.items():
        if key == "input":
            out[key] = _preview(value)
        elif key == "loc":
            out[key] = [p if isinstance(p, int) else _cut(str(p), 64) for p in value]
        elif key == "ctx" and isinstance(value, dict):  # e.g. {"error": ValueError(...)} from a validator
            out[key] = {_cut(str(k), 64): _preview(v) for k, v in list(value.items())[:10]}
        elif isinstance(value, str):
            out[key] = _cut(value, TEXT_CHARS)
        else:
            out[key] = _preview(value)
    return out


def _jsonable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 422 list, each error made safe and short, cut before the whole passes MAX_422_BYTES (at least
    one error is always kept)."""
    out: list[dict[str, Any]] = []
    size = 2
    for err in errors:
        safe = jsonable_encoder(_safe_error(dict(err)))
        n = len(orjson.dumps(safe)) + 1
        if out and size + n > MAX_422_BYTES:
            break
        out.append(safe)
        size += n
    return out


def validation_error(loc: tuple[str | int, ...], msg: str, value: Any = None) -> RequestValidationError:
    """A 422 in FastAPI's shape, for checks that span several parameters."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _jsonable_errors(list(exc.errors()))}, status_code=422)


def validation_errors_route(transform: Callable[[dict[str, Any]], dict[str, Any]]) -> type[APIRoute]:
    """A route class whose 422s pass each field error (a copy) through `transform` first — to mask or drop
    echoed input that may hold a secret (a provider key, a URL with credentials)."""

    class Route(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    raise RequestValidationError([transform(dict(e)) for e in exc.errors()]) from None

            return route

    return Route


def _rule_error(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


class RequestContextMiddleware:
    """Assigns the request id and turns any unhandled exception into a logged, opaque 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error request_id=%s %s %s", rid, scope.get("method"), scope.get("path"))
            if started:  # too late to answer; let the server close the connection
                raise
            response = JSONResponse(
                {"detail": "internal error", "request_id": rid},
                status_code=500,
                headers={"X-Request-ID": rid},
            )
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI, max_body_bytes: int | None = None) -> None:
    """The handlers above, the body limit (when given) and, outermost, the request-id middleware."""
    if max_body_bytes is not None:
        app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(NotFound, _rule_error(404))
    app.add_exception_handler(Conflict, _rule_error(409))
    app.add_exception_handler(Invalid, _rule_error(400))
    app.add_middleware(RequestContextMiddleware)


class ErrorBody(BaseModel):
    detail: Any


_ERROR_TEXT = {
    400: "Rule violation",
    401: "Missing or invalid credential",
    403: "Missing scope or organization not granted",
    404: "Not found (or owned by another organization)",
    409: "Conflict",
    503: "Dependency unavailable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the given error codes (all `{"detail": …}`)."""
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT.get(code, "Error")} for code in codes}
