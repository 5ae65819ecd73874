"""Anthropic Admin API usage report for the Messages API (admin key, `sk-ant-admin…`).

    GET {base}/v1/organizations/usage_report/messages
        ?starting_at=<RFC 3339>&ending_at=<RFC 3339>&bucket_width=1h&group_by[]=model&group_by[]=workspace_id
         &group_by[]=service_tier&group_by[]=context_window&group_by[]=inference_geo&limit=168[&page=<next_page>]
    x-api-key: <admin key>
    anthropic-version: 2023-06-01

    → {"data": [{"starting_at", "ending_at",
                 "results": [{"model", "workspace_id", "service_tier", "context_window", "inference_geo",
                              "uncached_input_tokens", "cache_read_input_tokens",
                              "cache_creation": {"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"},
                              "output_tokens", "server_tool_use": {"web_search_requests"}, …}]}],
       "has_more": bool, "next_page": str | null}

Source: https://platform.claude.com/docs/en/api/admin/usage_report/retrieve_messages (group_by: api_key_id,
workspace_id, model, service_tier, context_window, inference_geo, speed, account_id, service_account_id;
inference_geos: global | us | not_available). docs/pollers.md has the field-by-field table.

Mapping: uncached = uncached_input_tokens; cached = cache_read_input_tokens; cache creation = the 5-minute +
1-hour ephemeral cache writes; output = output_tokens; web searches = server_tool_use.web_search_requests. The
report has no request count: `request_count` is 0 (labelled `requests_reported=false`).

Region: `inference_geo` is where the request was served: `us` → region `us` (the factor set's Anthropic
US grid), `global` → region `global` (served anywhere: the provider default grid, flagged as an unknown region
by enrichment), `not_available` (a model that cannot pin a geo) → no region (provider default).
Labels: anthropic_workspace_id, service_tier, context_window, inference_geo. Identity keys: the model and each
grouping value that splits a bucket (a workspace, a tier other than standard, a context window other than
0-200k, an inference geo other than not_available).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from providers.base import (
    HOUR,
    PARTIAL_LABEL,
    ProviderClient,
    ProviderResponseError,
    UsageBucket,
    as_int,
    bucket_span,
    merge_buckets,
    parse_time,
)

API_VERSION = "2023-06-01"
MAX_HOURLY_BUCKETS = 168
ADMIN_PREFIX = "sk-ant-admin"
GROUP_BY = ("model", "workspace_id", "service_tier", "context_window", "inference_geo")
# grouping values that do not split a bucket (left out of the event id)
DEFAULTS = {"service_tier": "standard", "context_window": "0-200k", "inference_geo": "not_available"}
GEO_REGION = {"us": "us", "global": "global"}  # inference_geo → factor-set region (not_available: none)
LABEL = {"workspace_id": "anthropic_workspace_id"}


def _rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AnthropicUsage(ProviderClient):
    provider = "anthropic"
    default_base_url = "https://api.anthropic.com"
    bucket_width = HOUR

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self._key, "anthropic-version": API_VERSION}

    def check_key_format(self) -> str | None:
        if not self._key.startswith(ADMIN_PREFIX):
            return (
                "API key validation failed: insufficient permissions. "
                f"Anthropic Admin API keys start with {ADMIN_PREFIX} (Console → Settings → Admin keys)."
            )
        return None

    def auth_hint(self, status: int, message: str) -> str:
        if status == 401:
            return "invalid or revoked admin key"
        return "insufficient permissions: the usage report needs an Anthropic Admin API key"

    async def validate(self) -> None:
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        await self.get_json(
            "/v1/organizations/usage_report/messages",
            [("starting_at", _rfc3339(now - timedelta(days=1))), ("bucket_width", "1d"), ("limit", 1)],
        )

    async def fetch(self, start: datetime, end: datetime) -> list[UsageBucket]:
        self.notes = []
        out: list[UsageBucket] = []
        page: str | None = None
        limit = max(1, min(MAX_HOURLY_BUCKETS, int((end - start) / HOUR)))
        pages = 0
        while True:
            params: list[tuple[str, str | int]] = [
                ("starting_at", _rfc3339(start)),
                ("ending_at", _rfc3339(end)),
                ("bucket_width", "1h"),
                *(("group_by[]", g) for g in GROUP_BY),
                ("limit", limit),
            ]
            if page:
                params.append(("page", page))
            body = await self.get_json("/v1/organizations/usage_report/messages", params)
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise ProviderResponseError("anthropic usage report: no data list in the response")
            for bucket in body["data"]:
                out.extend(self._bucket(bucket))
            pages += 1
            page = body.get("next_page")
            if not body.get("has_more") or not page:
                return merge_buckets(out)
            if pages > 10_000:
                raise ProviderResponseError("anthropic usage report: pagination does not end")

    def _bucket(self, bucket: dict) -> list[UsageBucket]:
        if not isinstance(bucket, dict):
            raise ProviderResponseError("anthropic usage report: a bucket is not an object")
        start = parse_time(bucket.get("starting_at"), "starting_at")
        end = parse_time(bucket.get("ending_at"), "ending_at")
        span = bucket_span(start, end, self.bucket_width, self.notes, "anthropic usage report")
        if span is None:
            return []
        out = []
        for r in bucket.get("results") or []:
            if not isinstance(r, dict):
                raise ProviderResponseError("anthropic usage report: a result is not an object")
            creation = r.get("cache_creation") or {}
            tools = r.get("server_tool_use") or {}
            if not isinstance(creation, dict) or not isinstance(tools, dict):
                raise ProviderResponseError(
                    "anthropic usage report: cache_creation or server_tool_use is not an object"
                )
            cache_creation = as_int(
                creation.get("ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens"
            ) + as_int(creation.get("ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens")
            uncached = as_int(r.get("uncached_input_tokens"), "uncached_input_tokens")
            cached = as_int(r.get("cache_read_input_tokens"), "cache_read_input_tokens")
            output = as_int(r.get("output_tokens"), "output_tokens")
            searches = as_int(tools.get("web_search_requests"), "web_search_requests")
            if not (uncached or cached or cache_creation or output or searches):
                continue
            keys: list[tuple[str, str]] = []
            labels = {"requests_reported": "false"}
            for g in GROUP_BY[1:]:
                value = r.get(g)
                if value is None:
                    continue
                text = str(value)[:100]
                labels[LABEL.get(g, g)] = text
                if DEFAULTS.get(g) != text:
                    keys.append((g, text))
            if span[1] != end:
                labels[PARTIAL_LABEL] = "true"
            out.append(
                UsageBucket(
                    provider=self.provider,
                    bucket_start=span[0],
                    bucket_end=span[1],
                    model=str(r.get("model") or "unknown"),
                    group_keys=tuple(keys),
                    input_tokens_uncached=uncached,
                    input_tokens_cached=cached,
                    input_tokens_cache_creation=cache_creation,
                    output_tokens=output,
                    request_count=0,
                    labels=labels,
                    region=GEO_REGION.get(str(r.get("inference_geo") or "")),
                    web_search_calls=searches,
                )
            )
        return out
