"""OpenRouter activity API (management / provisioning key).

    GET {base}/api/v1/activity[?date=YYYY-MM-DD]
    Authorization: Bearer <management key>

    → {"data": [{"date": "YYYY-MM-DD", "model", "model_permaslug", "endpoint_id", "provider_name",
                 "usage", "byok_usage_inference", "requests",
                 "prompt_tokens", "completion_tokens", "reasoning_tokens"}]}

Granularity: **one UTC day**, grouped by endpoint, and only for the last 30 *completed* UTC days — there
is no hourly figure and no pagination. Each row becomes one daily bucket (`bucket_start` = the day at
00:00 UTC, `bucket_end` = next midnight), so today's usage appears the day after. The activity API
reports no cache breakdown: prompt tokens count as uncached input; completion tokens (which include the
reasoning tokens) as output. Identity keys: the endpoint id (one model at one upstream provider).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from providers.base import (
    DAY,
    ProviderClient,
    ProviderResponseError,
    UsageBucket,
    as_int,
    merge_buckets,
)

HISTORY_DAYS = 30  # the API serves the last 30 completed UTC days
PER_DAY_QUERIES_UP_TO = 7  # wider windows: one unfiltered request, filtered here


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


class OpenRouterUsage(ProviderClient):
    provider = "openrouter"
    default_base_url = "https://openrouter.ai"
    bucket_width = DAY

    def auth_hint(self, status: int, message: str) -> str:
        if status == 401:
            return "invalid or revoked key"
        return "insufficient permissions: the activity API needs an OpenRouter management (provisioning) key"

    async def validate(self) -> None:
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        await self.get_json("/api/v1/activity", {"date": yesterday.isoformat()})

    def completed_days(self, start: datetime, end: datetime, today: date | None = None) -> list[date]:
        today = today or datetime.now(UTC).date()
        first = max(start.astimezone(UTC).date(), today - timedelta(days=HISTORY_DAYS))
        days = []
        d = first
        while _midnight(d) < end and d < today:
            days.append(d)
            d += timedelta(days=1)
        return days

    def coverage(self, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
        days = self.completed_days(start, end)
        return (_midnight(days[0]), _midnight(days[-1]) + DAY) if days else None

    async def fetch(self, start: datetime, end: datetime) -> list[UsageBucket]:
        days = self.completed_days(start, end)
        if not days:
            return []
        wanted = {d.isoformat() for d in days}
        rows: list[dict] = []
        if len(days) <= PER_DAY_QUERIES_UP_TO:
            for d in days:
                rows.extend(self._rows(await self.get_json("/api/v1/activity", {"date": d.isoformat()})))
        else:
            rows = self._rows(await self.get_json("/api/v1/activity"))
        out = []
        for r in rows:
            day = str(r.get("date") or "")
            if day not in wanted:
                continue
            b = self._bucket(day, r)
            if b is not None:
                out.append(b)
        return merge_buckets(out)

    @staticmethod
    def _rows(body: object) -> list[dict]:
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise ProviderResponseError("openrouter activity: no data list in the response")
        for r in body["data"]:
            if not isinstance(r, dict):
                raise ProviderResponseError("openrouter activity: an item is not an object")
        return body["data"]

    def _bucket(self, day: str, r: dict) -> UsageBucket | None:
        try:
            d = date.fromisoformat(day)
        except ValueError:
            raise ProviderResponseError(f"openrouter activity: bad date {day[:20]!r}") from None
        prompt = as_int(r.get("prompt_tokens"), "prompt_tokens")
        completion = as_int(r.get("completion_tokens"), "completion_tokens")
        requests = as_int(r.get("requests"), "requests")
        if not (prompt or completion or requests):
            return None
        model = str(r.get("model") or r.get("model_permaslug") or "unknown")
        endpoint = str(r.get("endpoint_id") or r.get("model_permaslug") or model)
        labels = {"granularity": "1d"}
        if r.get("provider_name"):
            labels["upstream_provider"] = str(r["provider_name"])[:200]
        if r.get("model_permaslug"):
            labels["model_permaslug"] = str(r["model_permaslug"])[:200]
        return UsageBucket(
            provider=self.provider,
            bucket_start=_midnight(d),
            bucket_end=_midnight(d) + DAY,
            model=model,
            group_keys=(("endpoint_id", endpoint),),
            input_tokens_uncached=prompt,
            output_tokens=completion,
            request_count=requests,
            labels=labels,
        )
