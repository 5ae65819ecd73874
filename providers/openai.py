"""OpenAI organization usage API (admin key, `sk-admin-…`).

    GET {base}/v1/organization/usage/completions
    GET {base}/v1/organization/usage/embeddings
        ?start_time=<unix s>&end_time=<unix s>&bucket_width=1h&group_by=model&group_by=project_id
         &limit=168[&page=<next_page>]
    Authorization: Bearer <admin key>

    → {"object": "page", "data": [{"object": "bucket", "start_time", "end_time",
                                    "results": [{"object": "organization.usage.completions.result",
                                                 "input_tokens", "input_cached_tokens", "output_tokens",
                                                 "num_model_requests", "model", "project_id", …}]}],
       "has_more": bool, "next_page": str | null}

Mapping: `input_tokens` includes the cached ones, so uncached = input_tokens − input_cached_tokens; cached =
input_cached_tokens; output = output_tokens; requests = num_model_requests. Embeddings have input tokens
only. Identity keys: the endpoint (completions | embeddings) and the OpenAI project id; the OpenAI project
is also kept as the label `openai_project_id`.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from providers.base import (
    HOUR,
    ProviderClient,
    ProviderResponseError,
    UsageBucket,
    as_int,
    merge_buckets,
    parse_time,
)

KINDS = ("completions", "embeddings")
MAX_HOURLY_BUCKETS = 168  # documented maximum `limit` for bucket_width=1h
ADMIN_PREFIX = "sk-admin-"


class OpenAIUsage(ProviderClient):
    provider = "openai"
    default_base_url = "https://api.openai.com"
    bucket_width = HOUR

    def check_key_format(self) -> str | None:
        if not self._key.startswith(ADMIN_PREFIX):
            return (
                "API key validation failed: insufficient permissions. "
                f"OpenAI admin keys must start with {ADMIN_PREFIX} (create one under Organization → Admin keys)."
            )
        return None

    def auth_hint(self, status: int, message: str) -> str:
        if status == 401:
            return "invalid or revoked admin key"
        return "insufficient permissions: the usage API needs an OpenAI admin key (sk-admin-…)"

    async def validate(self) -> None:
        now = int(time.time())
        await self.get_json(
            "/v1/organization/usage/completions",
            [("start_time", now - 86400), ("bucket_width", "1d"), ("limit", 1)],
        )

    async def fetch(self, start: datetime, end: datetime) -> list[UsageBucket]:
        out: list[UsageBucket] = []
        for kind in KINDS:
            out.extend(await self._fetch_kind(kind, start, end))
        return merge_buckets(out)

    async def _fetch_kind(self, kind: str, start: datetime, end: datetime) -> list[UsageBucket]:
        out: list[UsageBucket] = []
        page: str | None = None
        limit = max(1, min(MAX_HOURLY_BUCKETS, int((end - start) / HOUR)))
        pages = 0
        while True:
            params: list[tuple[str, str | int]] = [
                ("start_time", int(start.timestamp())),
                ("end_time", int(end.timestamp())),
                ("bucket_width", "1h"),
                ("group_by", "model"),
                ("group_by", "project_id"),
                ("limit", limit),
            ]
            if page:
                params.append(("page", page))
            body = await self.get_json(f"/v1/organization/usage/{kind}", params)
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise ProviderResponseError(f"openai usage/{kind}: no data list in the response")
            for bucket in body["data"]:
                out.extend(self._bucket(kind, bucket))
            pages += 1
            page = body.get("next_page")
            if not body.get("has_more") or not page:
                return out
            if pages > 10_000:  # a provider bug must not spin forever
                raise ProviderResponseError("openai usage: pagination does not end")

    def _bucket(self, kind: str, bucket: dict) -> list[UsageBucket]:
        if not isinstance(bucket, dict):
            raise ProviderResponseError("openai usage: a bucket is not an object")
        start = parse_time(bucket.get("start_time"), "start_time")
        end = parse_time(bucket.get("end_time"), "end_time")
        if end - start != timedelta(hours=1):
            raise ProviderResponseError(f"openai usage: expected 1h buckets, got {end - start}")
        out = []
        for r in bucket.get("results") or []:
            if not isinstance(r, dict):
                raise ProviderResponseError("openai usage: a result is not an object")
            input_tokens = as_int(r.get("input_tokens"), "input_tokens")
            cached = min(as_int(r.get("input_cached_tokens"), "input_cached_tokens"), input_tokens)
            output = as_int(r.get("output_tokens"), "output_tokens") if kind == "completions" else 0
            requests = as_int(r.get("num_model_requests"), "num_model_requests")
            if not (input_tokens or output or requests):
                continue
            model = str(r.get("model") or "unknown")
            project = str(r.get("project_id") or "")
            out.append(
                UsageBucket(
                    provider=self.provider,
                    bucket_start=start,
                    bucket_end=end,
                    model=model,
                    group_keys=(("kind", kind), ("project_id", project)),
                    input_tokens_uncached=input_tokens - cached,
                    input_tokens_cached=cached,
                    output_tokens=output,
                    request_count=requests,
                    labels={"usage_api": kind, **({"openai_project_id": project} if project else {})},
                )
            )
        return out
