"""Local stub servers for the providers' usage APIs (http.server on 127.0.0.1, random port).

Each stub implements the documented request and response shapes closely enough that the production poller
code runs unchanged against it, and checks what a provider would check (auth header, required params,
limits):

- OpenAI  `GET /v1/organization/usage/{completions,embeddings,moderations,images,audio_speeches,
  audio_transcriptions,web_search_calls,…}`: `Authorization: Bearer`, admin keys only (403 for other valid
  keys), start_time (unix s, required), end_time, bucket_width 1m|1h|1d, group_by (repeated or `group_by[]`;
  the values each endpoint accepts, 400 otherwise), limit (max 168 for 1h), page = opaque next_page cursor;
  one bucket per hour in [start_time, end_time) (empty ones too), `limit` buckets per page, has_more /
  next_page; results carry the figures put, summed per grouping (`partial_last`: the current bucket ends at
  the stub's clock).
- Anthropic `GET /v1/organizations/usage_report/messages`: `x-api-key` + `anthropic-version` required,
  starting_at (RFC 3339, required), ending_at, bucket_width, group_by[] (workspace_id, service_tier,
  context_window, inference_geo, …), limit, page; same paging.
- OpenRouter `GET /api/v1/activity`: `Authorization: Bearer`, management keys only (403 "Only management
  keys can fetch activity"), optional date=YYYY-MM-DD within the last 30 completed UTC days (400 otherwise);
  no pagination.

Faults: `stub.fail_next(status, retry_after=…, times=n)` queues error answers (429 with Retry-After, 5xx,
…); `stub.keys[key] = "revoked"` makes a key answer 401. Every request is recorded (`stub.requests`).
"""

from __future__ import annotations

import base64
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

HOUR = timedelta(hours=1)
MAX_LIMIT = {"1m": 1440, "1h": 168, "1d": 31}
DEFAULT_LIMIT = {"1m": 60, "1h": 24, "1d": 7}
WIDTH = {"1m": timedelta(minutes=1), "1h": HOUR, "1d": timedelta(days=1)}


class StubError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Recorded:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]

    def params(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]


@dataclass
class Fault:
    status: int
    retry_after: str | None = None
    times: int = 1
    body: dict | None = None


def _floor(dt: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((dt - epoch) // width) * width


def _cursor(dt: datetime) -> str:
    return base64.urlsafe_b64encode(dt.isoformat().encode()).decode()


def _uncursor(page: str) -> datetime:
    try:
        return datetime.fromisoformat(base64.urlsafe_b64decode(page.encode()).decode())
    except ValueError:
        raise StubError(400, "invalid page cursor") from None


@dataclass
class ProviderStub:
    """Base: key handling, faults, recording, the HTTP server."""

    provider: str = ""
    keys: dict[str, str] = field(default_factory=dict)  # key -> "admin" | "limited" | "revoked"
    requests: list[Recorded] = field(default_factory=list)
    faults: deque = field(default_factory=deque)
    page_limit: int | None = None  # force smaller pages than the caller's limit
    now: datetime | None = None  # the stub's clock (default: real time)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------------------------- control

    def fail_next(
        self, status: int, *, retry_after: str | None = None, times: int = 1, body: dict | None = None
    ) -> None:
        with self.lock:
            self.faults.append(Fault(status, retry_after, times, body))

    def clock(self) -> datetime:
        return self.now or datetime.now(UTC)

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> ProviderStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qsl(parts.query, keep_blank_values=True)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with stub.lock:
                    stub.requests.append(Recorded("GET", parts.path, query, headers))
                    fault = None
                    if stub.faults:
                        fault = stub.faults[0]
                        fault.times -= 1
                        if fault.times <= 0:
                            stub.faults.popleft()
                try:
                    if fault is not None:
                        extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                        raise StubError(
                            fault.status, (fault.body or {}).get("message", "injected fault"), extra
                        )
                    body = stub.handle(parts.path, query, headers)
                    self._send(200, body)
                except StubError as exc:
                    self._send(exc.status, stub.error_body(exc.status, exc.message), exc.headers)

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.block_on_close = False  # keep-alive handler threads must not hold up close()
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    # ------------------------------------------------------------------------------------- per provider

    def error_body(self, status: int, message: str) -> dict:
        return {"error": {"message": message, "type": "error", "code": status}}

    def handle(self, path: str, query: list[tuple[str, str]], headers: dict[str, str]) -> Any:
        raise NotImplementedError

    def check_key(self, key: str | None, *, admin_message: str) -> None:
        role = self.keys.get(key or "")
        if role is None or role == "revoked":
            raise StubError(401, "Incorrect API key provided" if key else "missing API key")
        if role != "admin":
            raise StubError(403, admin_message)

    def paged_buckets(
        self, start: datetime, end: datetime | None, width_name: str, limit_raw: str | None, page: str | None
    ) -> tuple[list[tuple[datetime, datetime]], str | None]:
        width = WIDTH[width_name]
        limit = int(limit_raw) if limit_raw else DEFAULT_LIMIT[width_name]
        if not 1 <= limit <= MAX_LIMIT[width_name]:
            raise StubError(
                400, f"limit must be between 1 and {MAX_LIMIT[width_name]} for bucket_width={width_name}"
            )
        if self.page_limit:
            limit = min(limit, self.page_limit)
        first = _floor(start, width)
        stop = end or self.clock()
        cur = _uncursor(page) if page else first
        out = []
        while cur < stop and len(out) < limit:
            out.append((cur, cur + width))
            cur += width
        return out, (_cursor(cur) if cur < stop else None)


def _one(query: list[tuple[str, str]], name: str) -> str | None:
    vals = [v for k, v in query if k == name]
    if len(vals) > 1:
        raise StubError(400, f"{name} given more than once")
    return vals[0] if vals else None


# group_by values each OpenAI usage endpoint accepts (openai/openai-openapi: the `group_by` parameter of
# each /organization/usage/* operation)
OPENAI_GROUP_BY = {
    "completions": {"project_id", "user_id", "api_key_id", "model", "batch", "service_tier"},
    "embeddings": {"project_id", "user_id", "api_key_id", "model"},
    "moderations": {"project_id", "user_id", "api_key_id", "model"},
    "images": {"project_id", "user_id", "api_key_id", "model", "size", "source"},
    "audio_speeches": {"project_id", "user_id", "api_key_id", "model"},
    "audio_transcriptions": {"project_id", "user_id", "api_key_id", "model"},
    "web_search_calls": {"project_id", "user_id", "api_key_id", "model", "context_level"},
    "vector_stores": {"project_id"},
    "code_interpreter_sessions": {"project_id"},
    "file_search_calls": {"project_id", "vector_store_id"},
}
OPENAI_OBJECT = {"web_search_calls": "web_searches", "file_search_calls": "file_searches"}


def _aggregate(rows, group_by: set[str], dims: tuple[str, ...]) -> list[dict]:
    """Rows (dims dict, figures dict) summed per the asked-for grouping; dims not grouped by read None."""
    agg: dict[tuple, dict[str, Any]] = {}
    for row_dims, figs in rows:
        key = tuple(row_dims.get(d) if d in group_by else None for d in dims)
        acc = agg.setdefault(key, {})
        for f, v in figs.items():
            if isinstance(v, dict):
                sub = acc.setdefault(f, {})
                for k2, v2 in v.items():
                    sub[k2] = sub.get(k2, 0) + v2
            else:
                acc[f] = acc.get(f, 0) + v
    return [{**dict(zip(dims, key, strict=True)), **figs} for key, figs in agg.items()]


class OpenAIStub(ProviderStub):
    """rows: (kind, bucket_start, dims {model, project_id, service_tier, batch, size, source, context_level},
    result fields). The result carries exactly the figures put (so a test picks the schema: the current one
    from the spec's examples in tests/pollers/fixtures.py, or the pre-July-2026 one), summed per group_by."""

    DIMS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier", "size", "source",
            "context_level")  # fmt: skip

    def __init__(self) -> None:
        super().__init__(provider="openai")
        self.rows: list[tuple[str, datetime, dict[str, Any], dict[str, Any]]] = []
        self.partial_last = False  # cut the bucket holding the stub's clock at the clock (a partial bucket)

    def put(self, kind: str, start: datetime, model: str, project: str, **figures: Any) -> None:
        """One result: dims among the keyword arguments (service_tier=, batch=, size=, …), the rest figures. A
        later put with the same kind, start and dims replaces the earlier one (a provider's correction)."""
        dims = {"model": model, "project_id": project}
        for d in ("batch", "service_tier", "size", "source", "context_level"):
            if d in figures:
                dims[d] = figures.pop(d)
        with self.lock:
            self.rows = [r for r in self.rows if (r[0], r[1], r[2]) != (kind, start, dims)]
            self.rows.append((kind, start, dims, figures))

    def remove(self, kind: str, start: datetime, model: str, project: str) -> None:
        """The provider stops reporting the results of this model and project in this bucket."""
        with self.lock:
            self.rows = [
                r for r in self.rows
                if not (r[0] == kind and r[1] == start and (r[2].get("model"), r[2].get("project_id")) == (model, project))
            ]  # fmt: skip

    def put_result(self, kind: str, start: datetime, result: dict[str, Any]) -> None:
        """A documented example result, verbatim (tests/pollers/fixtures.py)."""
        dims = {d: result[d] for d in self.DIMS if d in result}
        figures = {k: v for k, v in result.items() if k not in self.DIMS and k != "object"}
        with self.lock:
            self.rows.append((kind, start, dims, figures))

    def handle(self, path, query, headers):
        prefix = "/v1/organization/usage/"
        kind = path[len(prefix) :] if path.startswith(prefix) else ""
        if kind not in OPENAI_GROUP_BY:
            raise StubError(404, f"unknown path {path}")
        auth = headers.get("authorization", "")
        self.check_key(
            auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None,
            admin_message="You have insufficient permissions for this operation. Missing scopes: api.usage.read",
        )
        start_raw = _one(query, "start_time")
        if start_raw is None:
            raise StubError(400, "start_time is required")
        try:
            start = datetime.fromtimestamp(int(start_raw), UTC)
            end_raw = _one(query, "end_time")
            end = datetime.fromtimestamp(int(end_raw), UTC) if end_raw else None
        except ValueError:
            raise StubError(400, "start_time/end_time must be unix seconds") from None
        width = _one(query, "bucket_width") or "1d"
        if width not in WIDTH:
            raise StubError(400, "bucket_width must be 1m, 1h or 1d")
        group_by = {v for k, v in query if k in ("group_by", "group_by[]")}
        if group_by - OPENAI_GROUP_BY[kind]:
            raise StubError(400, f"invalid group_by {sorted(group_by - OPENAI_GROUP_BY[kind])} for {kind}")
        buckets, next_page = self.paged_buckets(start, end, width, _one(query, "limit"), _one(query, "page"))
        with self.lock:
            rows = list(self.rows)
        data = []
        now = self.clock()
        for b_start, b_end in buckets:
            inside = [(d, f) for k, r_start, d, f in rows if k == kind and b_start <= r_start < b_end]
            results = [
                {"object": f"organization.usage.{OPENAI_OBJECT.get(kind, kind)}.result", **r}
                for r in _aggregate(inside, group_by, self.DIMS)
            ]
            if self.partial_last and b_start <= now < b_end:
                b_end = now
            data.append(
                {
                    "object": "bucket",
                    "start_time": int(b_start.timestamp()),
                    "end_time": int(b_end.timestamp()),
                    "results": results,
                }
            )
        return {"object": "page", "data": data, "has_more": next_page is not None, "next_page": next_page}


class AnthropicStub(ProviderStub):
    """rows: (bucket_start, dims {model, workspace_id, service_tier, context_window, inference_geo, api_key_id},
    figures {uncached_input_tokens, cache_read_input_tokens, cache_5m, cache_1h, output_tokens,
    web_search_requests})."""

    DIMS = ("api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo")
    GROUP_BY = {"api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo",
                "speed", "account_id", "service_account_id"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__(provider="anthropic")
        self.rows: list[tuple[datetime, dict[str, Any], dict[str, int]]] = []

    def put(
        self,
        start: datetime,
        model: str,
        *,
        workspace_id: str | None = None,
        service_tier: str = "standard",
        context_window: str = "0-200k",
        inference_geo: str = "not_available",
        **figures: int,
    ) -> None:
        dims = {"model": model, "workspace_id": workspace_id, "service_tier": service_tier,
                "context_window": context_window, "inference_geo": inference_geo}  # fmt: skip
        with self.lock:
            self.rows = [r for r in self.rows if (r[0], r[1]) != (start, dims)]
            self.rows.append((start, dims, figures))

    def put_result(self, start: datetime, result: dict[str, Any]) -> None:
        """A documented example result, verbatim (tests/pollers/fixtures.py)."""
        dims = {d: result.get(d) for d in self.DIMS}
        creation = result.get("cache_creation") or {}
        figures = {
            "uncached_input_tokens": result.get("uncached_input_tokens", 0),
            "cache_read_input_tokens": result.get("cache_read_input_tokens", 0),
            "cache_5m": creation.get("ephemeral_5m_input_tokens", 0),
            "cache_1h": creation.get("ephemeral_1h_input_tokens", 0),
            "output_tokens": result.get("output_tokens", 0),
            "web_search_requests": (result.get("server_tool_use") or {}).get("web_search_requests", 0),
        }
        with self.lock:
            self.rows.append((start, dims, figures))

    def error_body(self, status: int, message: str) -> dict:
        kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                429: "rate_limit_error"}.get(status, "api_error")  # fmt: skip
        return {"type": "error", "error": {"type": kind, "message": message}}

    def handle(self, path, query, headers):
        if path != "/v1/organizations/usage_report/messages":
            raise StubError(404, f"unknown path {path}")
        if not headers.get("anthropic-version"):
            raise StubError(400, "anthropic-version header is required")
        self.check_key(headers.get("x-api-key"), admin_message="This API requires an Admin API key")
        start_raw = _one(query, "starting_at")
        if not start_raw:
            raise StubError(400, "starting_at is required")
        try:
            start = datetime.fromisoformat(start_raw.replace("Z", "+00:00"))
            end_raw = _one(query, "ending_at")
            end = datetime.fromisoformat(end_raw.replace("Z", "+00:00")) if end_raw else None
        except ValueError:
            raise StubError(400, "starting_at/ending_at must be RFC 3339") from None
        width = _one(query, "bucket_width") or "1d"
        if width not in WIDTH:
            raise StubError(400, "bucket_width must be 1m, 1h or 1d")
        group_by = {v for k, v in query if k == "group_by[]"}
        if group_by - self.GROUP_BY:
            raise StubError(400, "invalid group_by[]")
        buckets, next_page = self.paged_buckets(start, end, width, _one(query, "limit"), _one(query, "page"))
        with self.lock:
            rows = list(self.rows)
        data = []
        for b_start, b_end in buckets:
            inside = [(d, f) for r_start, d, f in rows if b_start <= r_start < b_end]
            data.append(
                {
                    "starting_at": b_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "ending_at": b_end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "results": [
                        {
                            "uncached_input_tokens": f.get("uncached_input_tokens", 0),
                            "cache_creation": {
                                "ephemeral_1h_input_tokens": f.get("cache_1h", 0),
                                "ephemeral_5m_input_tokens": f.get("cache_5m", 0),
                            },
                            "cache_read_input_tokens": f.get("cache_read_input_tokens", 0),
                            "output_tokens": f.get("output_tokens", 0),
                            "server_tool_use": {"web_search_requests": f.get("web_search_requests", 0)},
                            **{d: f.get(d) for d in self.DIMS},
                        }
                        for f in _aggregate(inside, group_by, self.DIMS)
                    ],
                }
            )
        return {"data": data, "has_more": next_page is not None, "next_page": next_page}


class OpenRouterStub(ProviderStub):
    """rows[(date, endpoint_id)] = {model, model_permaslug, provider_name, requests, prompt_tokens,
    completion_tokens, reasoning_tokens, usage, byok_usage_inference}"""

    def __init__(self) -> None:
        super().__init__(provider="openrouter")
        self.rows: dict[tuple[date, str], dict[str, Any]] = {}

    def put(self, day: date, endpoint_id: str, **fields: Any) -> None:
        with self.lock:
            self.rows[(day, endpoint_id)] = fields

    def error_body(self, status: int, message: str) -> dict:
        return {"error": {"code": status, "message": message, "metadata": None}, "user_id": None}

    def handle(self, path, query, headers):
        if path != "/api/v1/activity":
            raise StubError(404, f"unknown path {path}")
        auth = headers.get("authorization", "")
        self.check_key(
            auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None,
            admin_message="Only management keys can fetch activity",
        )
        today = self.clock().date()
        completed = {today - timedelta(days=i) for i in range(1, 31)}
        day_raw = _one(query, "date")
        if day_raw is not None:
            try:
                day = date.fromisoformat(day_raw)
            except ValueError:
                raise StubError(400, "Invalid date format or date range") from None
            if day not in completed:
                raise StubError(400, "Invalid date format or date range")
            days = {day}
        else:
            days = completed
        with self.lock:
            rows = dict(self.rows)
        data = []
        for (d, endpoint), f in sorted(rows.items()):
            if d in days:
                data.append(
                    {
                        "date": d.isoformat(),
                        "model": f["model"],
                        "model_permaslug": f.get("model_permaslug", f["model"] + "-2025-01-01"),
                        "endpoint_id": endpoint,
                        "provider_name": f.get("provider_name", "SomeProvider"),
                        "usage": f.get("usage", 0.01),
                        "byok_usage_inference": f.get("byok_usage_inference", 0.0),
                        "requests": f.get("requests", 0),
                        "prompt_tokens": f.get("prompt_tokens", 0),
                        "completion_tokens": f.get("completion_tokens", 0),
                        "reasoning_tokens": f.get("reasoning_tokens", 0),
                    }
                )
        return {"data": data}


STUBS = {"openai": OpenAIStub, "anthropic": AnthropicStub, "openrouter": OpenRouterStub}

# Keys shaped like the real ones (admin / management), fixed for readability; the secret-leak assertions
# search for these exact strings.
ADMIN_KEYS = {
    "openai": "sk-admin-" + "Q7v" * 16,
    "anthropic": "sk-ant-admin01-" + "Zx9" * 20,
    "openrouter": "sk-or-v1-" + "m3k" * 21,
}
LIMITED_KEYS = {
    "openai": "sk-admin-" + "L1m" * 16,  # admin-shaped but the provider says 403
    "anthropic": "sk-ant-admin01-" + "L1m" * 20,
    "openrouter": "sk-or-v1-" + "L1m" * 21,  # an inference key: 403 on /activity
}
