"""OpenAI organization usage API (admin key, `sk-admin-…`): every usage endpoint that represents inference.

    GET {base}/v1/organization/usage/{kind}
        ?start_time=<unix s>&end_time=<unix s>&bucket_width=1h&group_by=model&group_by=project_id[&group_by=…]
         &limit=168[&page=<next_page>]
    Authorization: Bearer <admin key>

    → {"object": "page", "data": [{"object": "bucket", "start_time", "end_time", "results": [{…}]}],
       "has_more": bool, "next_page": str | null}

Source: the OpenAPI spec, github.com/openai/openai-openapi (`UsageCompletionsResult`, `UsageEmbeddingsResult`,
`UsageModerationsResult`, `UsageImagesResult`, `UsageAudioSpeechesResult`, `UsageAudioTranscriptionsResult`,
`UsageWebSearchesResult`); docs/pollers.md has the field-by-field table.

| kind                   | extra group_by          | figure read                                   | UsageEvent |
|------------------------|-------------------------|-----------------------------------------------|------------|
| completions            | service_tier, batch     | tokens, their cache split and modality parts  | tokens + modality parts |
| embeddings             |                         | input_tokens                                  | uncached input |
| moderations            |                         | input_tokens                                  | uncached input |
| images                 | size, source            | images                                        | `images` (+ label image_size) |
| audio_speeches         |                         | characters                                    | `audio_characters` |
| audio_transcriptions   |                         | seconds                                       | `audio_seconds` |
| web_search_calls       | context_level           | num_requests                                  | `web_search_calls` |

Not polled (not inference, or no energy figure to give them): vector_stores (storage bytes),
code_interpreter_sessions (sandbox sessions), file_search_calls (vector-store retrieval; the tokens the
results feed into a model are in completions).

Completions, current schema (July 2026): `input_tokens` = `input_uncached_tokens` + `input_cache_write_tokens`
+ `input_cached_tokens`; the three are read directly (the spec's example 5000 = 3000 + 200 + 1800 comes out
3000 / 200 / 1800). `input_{text,audio,image}_tokens` are the parts of the uncached input and
`input_cached_{text,audio,image}_tokens` of the cached input (the spec's example: 2500 + 300 + 200 = 3000,
1500 + 100 + 200 = 1800); `output_{text,audio,image}_tokens` of the output. Cache writes have no modality
split (counted as text). Older responses without `input_uncached_tokens`: uncached = input_tokens −
input_cached_tokens (− input_cache_write_tokens when given); if they have no `input_text_tokens` either,
`input_tokens`/`output_tokens` are text only and `input_audio_tokens`/`output_audio_tokens` are added on top.

Identity keys: the endpoint kind, the OpenAI project, and each extra grouping value that splits a bucket
(`batch=true`, a `service_tier` other than `default`, the image size and source, the web-search context
level); the default values are left out of the id, so the common bucket keeps the id it had before these
groupings were asked for.
"""

from __future__ import annotations

import time
from datetime import datetime

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

MAX_HOURLY_BUCKETS = 168  # documented maximum `limit` for bucket_width=1h
ADMIN_PREFIX = "sk-admin-"
# kind → the groupings asked for beyond model and project_id
KINDS: dict[str, tuple[str, ...]] = {
    "completions": ("service_tier", "batch"),
    "embeddings": (),
    "moderations": (),
    "images": ("size", "source"),
    "audio_speeches": (),
    "audio_transcriptions": (),
    "web_search_calls": ("context_level",),
}
EXCLUDED_KINDS = ("vector_stores", "code_interpreter_sessions", "file_search_calls")
DEFAULT_SERVICE_TIER = "default"


def _float(value: object, what: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
        raise ProviderResponseError(f"unexpected {what}: {str(value)[:40]!r}")
    return float(value)


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
        self.notes = []
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
                *(("group_by", g) for g in KINDS[kind]),
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
        span = bucket_span(start, end, self.bucket_width, self.notes, f"openai usage/{kind}")
        if span is None:
            return []
        out = []
        for r in bucket.get("results") or []:
            if not isinstance(r, dict):
                raise ProviderResponseError("openai usage: a result is not an object")
            figures = self._completions(r) if kind == "completions" else self._single(kind, r)
            if not any(figures.values()):
                continue
            model = str(r.get("model") or "unknown")
            project = str(r.get("project_id") or "")
            keys: list[tuple[str, str]] = [("kind", kind), ("project_id", project)]
            labels = {"usage_api": kind, **({"openai_project_id": project} if project else {})}
            for g in KINDS[kind]:
                value = r.get(g)
                if value is None:
                    continue
                text = str(value).lower() if isinstance(value, bool) else str(value)[:100]
                labels[g] = text
                if (g, text) not in (("batch", "false"), ("service_tier", DEFAULT_SERVICE_TIER)):
                    keys.append((g, text))
            if kind == "images" and r.get("size"):
                labels["image_size"] = str(r["size"])[:100]
            if span[1] != end:
                labels[PARTIAL_LABEL] = "true"
            out.append(
                UsageBucket(
                    provider=self.provider,
                    bucket_start=span[0],
                    bucket_end=span[1],
                    model=model,
                    group_keys=tuple(keys),
                    labels=labels,
                    **figures,
                )
            )
        return out

    # ----------------------------------------------------------------------------------- per kind

    def _completions(self, r: dict) -> dict:
        def n(name: str) -> int:
            return as_int(r.get(name), name)

        input_tokens, output = n("input_tokens"), n("output_tokens")
        requests = n("num_model_requests")
        current = r.get("input_uncached_tokens") is not None or r.get("input_text_tokens") is not None
        if r.get("input_uncached_tokens") is not None:
            uncached, cached, write = (
                n("input_uncached_tokens"),
                n("input_cached_tokens"),
                n("input_cache_write_tokens"),
            )
            if uncached + cached + write != input_tokens:
                self._note(
                    f"openai usage/completions: input_tokens {input_tokens} ≠ uncached {uncached} + cached "
                    f"{cached} + cache writes {write}; the three parts are used"
                )
        else:  # older responses: derive the uncached input by subtraction
            cached = min(n("input_cached_tokens"), input_tokens)
            write = min(n("input_cache_write_tokens"), input_tokens - cached)
            uncached = input_tokens - cached - write
        if current:
            parts = {
                "input_audio_tokens": n("input_audio_tokens"),
                "input_image_tokens": n("input_image_tokens"),
                "input_cached_audio_tokens": n("input_cached_audio_tokens"),
                "input_cached_image_tokens": n("input_cached_image_tokens"),
                "output_audio_tokens": n("output_audio_tokens"),
                "output_image_tokens": n("output_image_tokens"),
            }
        else:  # before July 2026: input/output tokens were text only, audio came on top
            audio_in, audio_out = n("input_audio_tokens"), n("output_audio_tokens")
            uncached += audio_in
            output += audio_out
            parts = {"input_audio_tokens": audio_in, "output_audio_tokens": audio_out}
        parts = self._clamped(parts, uncached, cached, output)
        return {
            "input_tokens_uncached": uncached,
            "input_tokens_cached": cached,
            "input_tokens_cache_creation": write,
            "output_tokens": output,
            "request_count": requests,
            **parts,
        }

    def _clamped(self, parts: dict[str, int], uncached: int, cached: int, output: int) -> dict[str, int]:
        """Modality parts never exceed the figure they are part of (an inconsistent row is noted)."""
        for names, whole in (
            (("input_audio_tokens", "input_image_tokens"), uncached),
            (("input_cached_audio_tokens", "input_cached_image_tokens"), cached),
            (("output_audio_tokens", "output_image_tokens"), output),
        ):
            total = sum(parts.get(x, 0) for x in names)
            if total > whole:
                self._note(f"openai usage/completions: {' + '.join(names)} = {total} exceed {whole}; capped")
                room = whole
                for x in names:
                    parts[x] = min(parts.get(x, 0), room)
                    room -= parts[x]
        return parts

    def _single(self, kind: str, r: dict) -> dict:
        """The endpoints with one figure: (documented field → UsageEvent field) in SINGLE_FIGURE. Web-search
        results also carry num_model_requests: completions requests that used the tool, counted there."""
        field, target, requests = SINGLE_FIGURE[kind]
        read = _float if target == "audio_seconds" else as_int
        out: dict = {target: read(r.get(field), field)}
        if requests:
            out["request_count"] = as_int(r.get("num_model_requests"), "num_model_requests")
        return out

    def _note(self, note: str) -> None:
        if note not in self.notes and len(self.notes) < 50:
            self.notes.append(note)


# kind → (documented field, UsageEvent field, whether num_model_requests counts as requests)
SINGLE_FIGURE: dict[str, tuple[str, str, bool]] = {
    "embeddings": ("input_tokens", "input_tokens_uncached", True),
    "moderations": ("input_tokens", "input_tokens_uncached", True),
    "images": ("images", "images", True),
    "audio_speeches": ("characters", "audio_characters", True),
    "audio_transcriptions": ("seconds", "audio_seconds", True),
    "web_search_calls": ("num_requests", "web_search_calls", False),
}
