"""OpenRouter activity API (management / provisioning key).

    GET {base}/api/v1/activity[?date=YYYY-MM-DD]
    Authorization: Bearer <management key>

    → {"data": [{"date": "YYYY-MM-DD", "model", "model_permaslug", "endpoint_id", "provider_name",
                 "usage", "byok_usage_inference", "byok_requests", "requests",
                 "prompt_tokens", "completion_tokens", "reasoning_tokens"}]}

Source: https://openrouter.ai/docs/api/api-reference/analytics/get-user-activity (activity grouped by
endpoint for the last 30 completed UTC days; `usage` = OpenRouter credits spent, `byok_usage_inference` = the
inference cost of requests made with the user's own provider key (BYOK)). docs/pollers.md has the table.

Granularity: **one UTC day**, grouped by endpoint, and only for the last 30 *completed* UTC days — there
is no hourly figure and no pagination. Each row becomes one daily bucket (`bucket_start` = the day at
00:00 UTC, `bucket_end` = next midnight). A day is read only from `SETTLE` (30 minutes) after its end: the
activity is counted by request start and a day's figures are complete about 30 minutes after UTC midnight,
so reading it at 00:05 would publish a short day (the next poll would correct it, but reports in between
would be low). The activity API reports no cache breakdown: prompt tokens count as uncached input.

Reasoning tokens (assumption; OpenRouter does not document it): `completion_tokens` INCLUDES
`reasoning_tokens` (OpenRouter bills reasoning as output tokens and its generation records count them inside
the completion), so output = completion_tokens; `reasoning_tokens` is kept as a label. A row whose
reasoning_tokens exceed completion_tokens cannot include them: it counts completion + reasoning, noted.

BYOK (`byok_share`, `apply_byok`): requests billed to the customer's own OpenAI/Anthropic key also appear in
that provider's usage report. When the org has an active connection to that provider, the BYOK part of the
row is left out here (it is counted by that connection) — never twice. Identity keys: the endpoint id.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

from core.contracts import USAGE_NOTE_LABEL
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
SETTLE = timedelta(minutes=30)  # a day's activity is complete ~30 min after UTC midnight
BYOK_FEE = 0.05  # OpenRouter's BYOK fee: 5% of what the request would cost on OpenRouter, charged as `usage`
# provider_name (lower-case) of an upstream whose own usage API has a poller here → that provider
UPSTREAMS = {"openai": "openai", "anthropic": "anthropic"}


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

    def completed_days(self, start: datetime, end: datetime, now: datetime | None = None) -> list[date]:
        """The UTC days in [start, end) that are complete (SETTLE past their end) and still served."""
        now = now or datetime.now(UTC)
        last = (now - SETTLE).date()  # days before this one are complete
        first = max(start.astimezone(UTC).date(), now.date() - timedelta(days=HISTORY_DAYS))
        days = []
        d = first
        while _midnight(d) < end and d < last:
            days.append(d)
            d += timedelta(days=1)
        return days

    def coverage(self, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
        days = self.completed_days(start, end)
        return (_midnight(days[0]), _midnight(days[-1]) + DAY) if days else None

    async def fetch(self, start: datetime, end: datetime) -> list[UsageBucket]:
        self.notes = []
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
        reasoning = as_int(r.get("reasoning_tokens"), "reasoning_tokens")
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
        if reasoning:
            labels["reasoning_tokens"] = str(reasoning)
        output = completion
        if reasoning > completion:
            output = completion + reasoning
            labels[USAGE_NOTE_LABEL] = (
                f"openrouter: reasoning_tokens {reasoning} > completion_tokens {completion}: counted on top"
            )
        usage, byok = (
            _money(r.get("usage"), "usage"),
            _money(r.get("byok_usage_inference"), "byok_usage_inference"),
        )
        if byok > 0:
            labels["byok_usage_inference"] = f"{byok:.6g}"
            labels["usage"] = f"{usage:.6g}"
        return UsageBucket(
            provider=self.provider,
            bucket_start=_midnight(d),
            bucket_end=_midnight(d) + DAY,
            model=model,
            group_keys=(("endpoint_id", endpoint),),
            input_tokens_uncached=prompt,
            output_tokens=output,
            request_count=requests,
            labels=labels,
        )


def _money(value: object, what: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ProviderResponseError(f"openrouter activity: unexpected {what}: {str(value)[:40]!r}")
    return float(value)


def byok_share(usage: float, byok: float) -> float:
    """The part of an activity row served with the customer's own key, by cost: BYOK requests cost
    `byok_usage_inference` at the upstream and BYOK_FEE × that in OpenRouter credits (`usage`); the rest of
    `usage` is requests paid with credits, at the same list prices. 1.0 for a row of BYOK requests only."""
    if byok <= 0:
        return 0.0
    credits = max(0.0, usage - BYOK_FEE * byok)
    return byok / (byok + credits)


def apply_byok(buckets: list[UsageBucket], connected: Collection[str]) -> tuple[list[UsageBucket], list[str]]:
    """Leave out the BYOK part of the rows whose upstream provider this org also polls (`connected`: the
    providers of its other active connections): those tokens arrive from that provider's own usage report.
    Returns the buckets (the BYOK part removed, with a `usage_note` saying so) and notes for the poll's log
    and the connection's status. Rows with BYOK usage whose upstream is not polled are counted here, noted."""
    out, notes = [], []
    for b in buckets:
        byok = float(b.labels.get("byok_usage_inference", 0) or 0)
        if byok <= 0:
            out.append(b)
            continue
        upstream_name = b.labels.get("upstream_provider", "")
        upstream = UPSTREAMS.get(upstream_name.strip().lower())
        share = byok_share(float(b.labels.get("usage", 0) or 0), byok)
        day = b.bucket_start.date().isoformat()
        if upstream is None or upstream not in connected:
            note = (
                f"openrouter BYOK: {share:.0%} of {b.model} on {day} used the org's own "
                f"{upstream_name or 'upstream'} key; no {upstream or upstream_name or 'upstream'} connection polls it, "
                "so it is counted here"
            )
            out.append(replace(b, labels={**b.labels, "byok_counted_by": "openrouter"}))
            notes.append(note)
            continue
        keep = 1.0 - share
        note = (
            f"openrouter BYOK: {share:.1%} of these tokens used the org's own {upstream} key and are counted "
            f"by its {upstream} connection, not here"
        )
        out.append(
            replace(
                b,
                input_tokens_uncached=round(b.input_tokens_uncached * keep),
                output_tokens=round(b.output_tokens * keep),
                request_count=round(b.request_count * keep),
                labels={**b.labels, USAGE_NOTE_LABEL: note[:200], "byok_counted_by": upstream},
            )
        )
        notes.append(f"{note} ({b.model}, {day})")
    return out, notes
