"""Calling upstreams (aiohttp: one keep-alive connection pool per upstream) and classifying failures.

Fallback rules (docs/gateway.md): a connection error or timeout, HTTP 429, any 5xx, an upstream 401/403/404
(our credential or our routing file is wrong, not the client's request) and a 2xx whose body is not JSON
all count as *upstream failures*: the next candidate is tried. A 400/413/422 is the client's fault and is
returned to the client as is (in OpenAI's error shape). After the last candidate: 503 when every attempt
was unreachable or rate-limited, else 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from starlette.responses import Response

from pipelines.gateway.config import Upstream
from pipelines.gateway.errors import GatewayError

CLIENT_ERRORS = {400, 413, 422}
UNAVAILABLE = "unavailable"  # connect error, timeout, 429
BAD_ANSWER = "bad_answer"  # 5xx, 401/403/404, non-JSON


@dataclass
class Attempt:
    upstream: str
    kind: str  # UNAVAILABLE | BAD_ANSWER
    detail: str


@dataclass
class Answer:
    status: int
    body: bytes
    data: Any  # parsed JSON (dict) for 2xx


class UpstreamFailure(Exception):
    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.detail)
        self.attempt = attempt


class ClientFault(Exception):
    """The upstream rejected the client's request (400/413/422): pass it back."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status, self.body = status, body

    def response(self, headers: dict[str, str]) -> Response:
        """The upstream's error handed back in OpenAI's shape (its own body when it is one)."""
        try:
            data = orjson.loads(self.body)
            ok = isinstance(data, dict) and isinstance(data.get("error"), dict)
        except orjson.JSONDecodeError:
            ok = False
        # the upstream's own bytes when they are an OpenAI error (never re-encoded: no depth to overflow)
        body = (
            self.body
            if ok
            else orjson.dumps(
                GatewayError(self.status, f"The upstream rejected the request (HTTP {self.status}).").body()
            )
        )
        return Response(body, status_code=self.status, media_type="application/json", headers=headers)


def final_error(attempts: list[Attempt]) -> GatewayError:
    """The answer when every candidate failed: 502 when one gave a bad answer, else 503 (retry later)."""
    tried = "; ".join(f"{a.upstream}: {a.detail}" for a in attempts)
    if any(a.kind == BAD_ANSWER for a in attempts):
        return GatewayError(
            502, f"Every capable upstream failed ({tried}).", type="api_error", code="upstream_error"
        )
    return GatewayError(
        503,
        f"No capable upstream is reachable right now ({tried}). Retry later.",
        type="api_error",
        code="upstream_unavailable",
        headers={"Retry-After": "1"},
    )


class UpstreamPool:
    def __init__(self, upstreams: list[Upstream]) -> None:
        self.upstreams = {u.name: u for u in upstreams}
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._headers: dict[str, dict[str, str]] = {}

    async def start(self) -> None:
        for u in self.upstreams.values():
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            key = u.api_key()
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self._headers[u.name] = headers
            self._sessions[u.name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=u.max_connections, ttl_dns_cache=300, keepalive_timeout=30
                ),
                timeout=aiohttp.ClientTimeout(total=None, connect=u.connect_timeout_s, sock_read=u.timeout_s),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )

    async def close(self) -> None:
        for s in self._sessions.values():
            with contextlib.suppress(Exception):
                await s.close()
        self._sessions.clear()

    def _fail_status(self, name: str, status: int, body: bytes) -> UpstreamFailure:
        kind = UNAVAILABLE if status == 429 else BAD_ANSWER
        # an upstream's 401/403 text may quote (part of) our credential: never pass it on
        snippet = "credential rejected by the upstream" if status in (401, 403) else _error_message(body)
        return UpstreamFailure(Attempt(name, kind, f"HTTP {status}" + (f": {snippet}" if snippet else "")))

    async def _post(self, u: Upstream, path: str, payload: bytes) -> aiohttp.ClientResponse:
        session = self._sessions[u.name]
        url = u.base_url + path
        for attempt in (0, 1):
            try:
                return await session.post(url, data=payload, headers=self._headers[u.name])
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # a keep-alive connection the upstream had closed: retry once on a fresh connection
                if attempt == 0 and not isinstance(exc, aiohttp.ClientConnectorError):
                    continue
                raise UpstreamFailure(Attempt(u.name, UNAVAILABLE, _describe(exc))) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamFailure(Attempt(u.name, UNAVAILABLE, _describe(exc))) from exc
        raise AssertionError("unreachable")

    async def call(self, u: Upstream, path: str, payload: bytes) -> Answer:
        """POST and read the whole answer. Raises UpstreamFailure or ClientFault."""
        resp = await self._post(u, path, payload)
        try:
            body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            resp.release()
            raise UpstreamFailure(Attempt(u.name, UNAVAILABLE, _describe(exc))) from exc
        status = resp.status
        if status in CLIENT_ERRORS:
            raise ClientFault(status, body)
        if status >= 300:
            raise self._fail_status(u.name, status, body)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamFailure(
                Attempt(u.name, BAD_ANSWER, "answered 2xx with a body that is not a JSON object")
            )
        return Answer(status, body, data)

    async def open_stream(self, u: Upstream, path: str, payload: bytes) -> aiohttp.ClientResponse:
        """POST a streaming request; returns the open response once its status is 2xx (the caller reads
        and releases it). Raises UpstreamFailure or ClientFault."""
        resp = await self._post(u, path, payload)
        status = resp.status
        if status < 300:
            ctype = resp.headers.get("Content-Type", "")
            if "text/event-stream" not in ctype:
                body = await _read_quietly(resp)
                raise UpstreamFailure(
                    Attempt(
                        u.name,
                        BAD_ANSWER,
                        f"expected an event stream, got {ctype or 'no content type'}: {body[:80]!r}",
                    )
                )
            return resp
        body = await _read_quietly(resp)
        if status in CLIENT_ERRORS:
            raise ClientFault(status, body)
        raise self._fail_status(u.name, status, body)


async def _read_quietly(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await asyncio.wait_for(resp.read(), 5)
    except (aiohttp.ClientError, TimeoutError):
        return b""
    finally:
        resp.release()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return f"{type(exc).__name__}: {exc}"[:200]


_SECRETISH = re.compile(
    r"(?i)\b(?:sk|js_live|rk|pk|api|key)[-_][A-Za-z0-9*_\-]{6,}|[A-Za-z0-9_\-]*\*{3,}[A-Za-z0-9*_\-]*|"
    r"\bbearer\s+\S+"
)


def _error_message(body: bytes) -> str:
    """The upstream's error message, shortened, with anything that looks like a key redacted."""
    with contextlib.suppress(Exception):
        err = orjson.loads(body).get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return _SECRETISH.sub("[redacted]", err["message"][:200])
    return ""
