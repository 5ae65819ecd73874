"""What every provider poller shares: the bucket model, deterministic event ids, content hashes, revisions,
the bucket → UsageEvent mapping, and an httpx client that handles rate limits and server errors.

Identity: `event_id = "<provider>-" + sha256(provider, connection_id, bucket_start, bucket width, model,
the provider's grouping keys)[:40]`. The same provider bucket always gets the same id, from any poller
process, on any re-poll.

Revision: a stored per-bucket content hash decides it (`controlplane.connections.connection_buckets`):
- a bucket seen for the first time gets `revision = poll time in epoch milliseconds`;
- a re-poll with the same figures (same content hash) keeps the stored revision, so it produces the same
  (event_id, revision) — nothing is even re-published, and if it were the warehouse ledger would skip it;
- changed figures (a provider's late correction) get `max(poll time ms, stored revision + 1)`, strictly
  higher, so the ledger replaces the old figure.
Using the poll time (rather than a counter from 0) keeps revisions increasing even if the state table were
lost: the next poll re-publishes every bucket with a higher revision and the same figures, which replaces
each bucket with itself (totals unchanged).

A bucket that the provider no longer reports (inside a window that was fetched completely) is a correction
to zero: it is re-published with zero tokens and a higher revision.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from core.contracts import MODALITY_FIELDS, UNIT_FIELDS, Source, UsageEvent
from core.secrets import redact

log = logging.getLogger("joulestream.pollers")

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
USER_AGENT = "joulestream-poller/1"


# --------------------------------------------------------------------------------------------- errors


class ProviderError(Exception):
    """A poll failed. `str()` is safe to store and show: it never contains the key."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(ProviderError):
    """401/403: the key is invalid, revoked, or lacks the admin/management permission."""


class RateLimited(ProviderError):
    """429 after the client's retries; `retry_after` seconds as the provider asked (if it said)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, 429)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """5xx, timeouts, connection errors (after retries)."""


class ProviderResponseError(ProviderError):
    """A response that does not have the documented shape."""


# --------------------------------------------------------------------------------------------- buckets


# Figures a bucket may carry beyond the five base ones (issue 21): modality parts and non-token units, named
# as on UsageEvent. They enter the content hash only when non-zero, so a bucket without them keeps its hash.
EXTRA_FIGURES: tuple[str, ...] = (*MODALITY_FIELDS, *UNIT_FIELDS)


@dataclass(frozen=True)
class UsageBucket:
    """One provider figure: usage of one model (and the provider's grouping keys) in one time bucket."""

    provider: str
    bucket_start: datetime
    bucket_end: datetime
    model: str
    group_keys: tuple[tuple[str, str], ...] = ()  # e.g. (("kind", "completions"), ("project_id", "proj_1"))
    input_tokens_uncached: int = 0
    input_tokens_cached: int = 0
    input_tokens_cache_creation: int = 0
    output_tokens: int = 0
    request_count: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    region: str | None = None  # the serving region the provider reported (factor-set region key)
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    input_cached_audio_tokens: int = 0
    input_cached_image_tokens: int = 0
    output_audio_tokens: int = 0
    output_image_tokens: int = 0
    images: int = 0
    audio_seconds: float = 0.0
    audio_characters: int = 0
    web_search_calls: int = 0

    @property
    def width(self) -> timedelta:
        return self.bucket_end - self.bucket_start

    def figures(self) -> tuple:
        base: tuple = (
            self.input_tokens_uncached,
            self.input_tokens_cached,
            self.input_tokens_cache_creation,
            self.output_tokens,
            self.request_count,
        )
        extra = tuple((name, getattr(self, name)) for name in EXTRA_FIGURES if getattr(self, name))
        return base + extra if extra else base

    def __add__(self, other: UsageBucket) -> UsageBucket:
        """Two rows for the same identity (a provider may split a group we do not ask for): summed."""
        summed = {
            name: getattr(self, name) + getattr(other, name)
            for name in ("input_tokens_uncached", "input_tokens_cached", "input_tokens_cache_creation",
                         "output_tokens", "request_count", *EXTRA_FIGURES)
        }  # fmt: skip
        return replace(self, **summed)


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_id_for(connection_id: str, bucket: UsageBucket) -> str:
    """Deterministic id of a provider bucket (see the module docstring)."""
    parts = [
        "joulestream-poller-v1",
        bucket.provider,
        connection_id,
        _ts(bucket.bucket_start),
        str(int(bucket.width.total_seconds())),
        bucket.model,
        *(f"{k}={v}" for k, v in sorted(bucket.group_keys)),
    ]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
    return f"{bucket.provider}-{digest}"


def content_hash(bucket: UsageBucket) -> str:
    """Hash of the figures only: what a correction changes."""
    return hashlib.sha256(orjson.dumps(bucket.figures())).hexdigest()


ZERO_CONTENT_HASH = hashlib.sha256(orjson.dumps((0, 0, 0, 0, 0))).hexdigest()  # a bucket corrected to nothing


def next_revision(now: datetime, previous: int | None) -> int:
    ms = int(now.timestamp() * 1000)
    return ms if previous is None else max(ms, previous + 1)


def merge_buckets(buckets: Sequence[UsageBucket]) -> list[UsageBucket]:
    """Sum rows that share an identity (provider, start, width, model, group keys)."""
    out: dict[tuple, UsageBucket] = {}
    for b in buckets:
        key = (b.provider, b.bucket_start, b.bucket_end, b.model, tuple(sorted(b.group_keys)))
        out[key] = out[key] + b if key in out else b
    return list(out.values())


def to_event(
    bucket: UsageBucket,
    *,
    event_id: str,
    revision: int,
    org_id: str,
    project_id: str,
    workload_id: str,
    connection_id: str,
) -> UsageEvent:
    return UsageEvent(
        event_id=event_id,
        revision=revision,
        source=Source.poller,
        org_id=org_id,
        project_id=project_id,
        workload_id=workload_id,
        connection_id=connection_id,
        provider=bucket.provider,
        model=bucket.model,
        bucket_start=bucket.bucket_start,
        bucket_end=bucket.bucket_end,
        event_timestamp=bucket.bucket_end,  # deterministic: a re-poll yields the very same event
        input_tokens_uncached=bucket.input_tokens_uncached,
        input_tokens_cached=bucket.input_tokens_cached,
        input_tokens_cache_creation=bucket.input_tokens_cache_creation,
        output_tokens=bucket.output_tokens,
        request_count=bucket.request_count,
        labels=dict(bucket.labels),
        region=bucket.region,
        **{name: getattr(bucket, name) for name in EXTRA_FIGURES},
    )


def as_int(value: Any, what: str) -> int:
    """A non-negative token count from a provider response (None → 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderResponseError(f"unexpected {what}: {type(value).__name__}")
    if value < 0:
        raise ProviderResponseError(f"negative {what}")
    return int(value)


def parse_time(value: Any, what: str) -> datetime:
    """Unix seconds or an RFC 3339 string → aware UTC datetime."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise ProviderResponseError(f"unexpected {what}: {str(value)[:40]!r}")


PARTIAL_LABEL = "partial_bucket"


def bucket_span(
    start: datetime, end: datetime, width: timedelta, notes: list[str], what: str
) -> tuple[datetime, datetime] | None:
    """The (start, end) a provider bucket is stored under, or None to skip it. A whole bucket as asked for is
    itself. A shorter bucket that starts on a bucket boundary is a partial one (the provider cut the current
    bucket at the end of the window or at its clock): it is stored under the whole bucket's span — the same
    event id the complete bucket will have, so the next poll replaces it — and labelled `partial_bucket`. Any
    other shape (longer, misaligned, empty) is skipped with a note in `notes`, which the poll logs and returns;
    the connection keeps polling (a hard error would stop every poll on one odd bucket)."""
    if end - start == width:
        return start, end
    if timedelta(0) < end - start < width and floor_to(start, width) == start:
        return start, start + width
    note = f"{what}: skipped a bucket of unexpected shape {_ts(start)}..{_ts(end)} (expected {width})"
    if note not in notes:
        notes.append(note)
    return None


def floor_to(dt: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((dt.astimezone(UTC) - epoch) // width) * width


# --------------------------------------------------------------------------------------------- HTTP


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _provider_message(response: httpx.Response) -> str:
    """The provider's error message ({"error": {"message"}} or {"error": "…"}), short."""
    try:
        body = response.json()
    except ValueError:
        return ""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        msg = err.get("message") or err.get("type") or ""
    elif isinstance(err, str):
        msg = err
    else:
        msg = ""
    return str(msg)[:200]


Sleep = Callable[[float], Awaitable[None]]


@dataclass
class HttpPolicy:
    """Retries inside one poll: 429 waits Retry-After (capped), 5xx/network back off exponentially."""

    timeout_s: float = 30.0
    max_attempts: int = 4
    backoff_s: float = 1.0
    max_retry_after_s: float = 60.0


class ProviderClient:
    """Base of the provider modules: holds the key and base URL and does GETs with the retry policy. The key
    only ever goes into the auth header; every error message passes through `redact`."""

    provider: str = ""
    default_base_url: str = ""
    bucket_width: timedelta = HOUR

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        http: httpx.AsyncClient | None = None,
        policy: HttpPolicy | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self._key = api_key
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self._http = http
        self._own_http = http is None
        self.policy = policy or HttpPolicy()
        self._sleep = sleep or asyncio.sleep
        self.requests = 0
        self.notes: list[str] = []  # what the last fetch noticed and worked around (shapes, BYOK); logged

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.policy.timeout_s, headers={"User-Agent": USER_AGENT})
        return self._http

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    def auth_hint(self, status: int, message: str) -> str:
        """Provider-specific explanation of a 401/403."""
        return "the provider rejected the key" if status == 401 else "the key lacks the required permission"

    async def get_json(self, path: str, params: Any = None) -> Any:
        url = f"{self.base_url}{path}"
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            try:
                r = await self.http.get(url, params=params, headers=self.auth_headers())
            except httpx.HTTPError as exc:
                if attempt >= self.policy.max_attempts:
                    raise ProviderUnavailable(
                        redact(f"{self.provider} unreachable: {type(exc).__name__}", self._key)
                    ) from None
                await self._sleep(self.policy.backoff_s * 2 ** (attempt - 1))
                continue
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError:
                    raise ProviderResponseError(
                        f"{self.provider} answered 200 with a non-JSON body"
                    ) from None
            message = redact(_provider_message(r), self._key)
            if r.status_code in (401, 403):
                raise AuthError(
                    f"{self.provider} {r.status_code}: {self.auth_hint(r.status_code, message)}"
                    + (f" ({message})" if message else ""),
                    r.status_code,
                )
            if r.status_code == 429:
                wait = retry_after_seconds(r.headers.get("retry-after"))
                if attempt >= self.policy.max_attempts or (wait or 0) > self.policy.max_retry_after_s:
                    raise RateLimited(f"{self.provider} rate limit (429) persisted", wait)
                log.info(
                    "provider rate limit, retrying",
                    extra={"provider": self.provider, "retry_after_s": wait, "attempt": attempt},
                )
                await self._sleep(wait if wait is not None else self.policy.backoff_s * 2 ** (attempt - 1))
                continue
            if r.status_code >= 500:
                if attempt >= self.policy.max_attempts:
                    raise ProviderUnavailable(
                        f"{self.provider} server error {r.status_code}" + (f": {message}" if message else ""),
                        r.status_code,
                    )
                await self._sleep(self.policy.backoff_s * 2 ** (attempt - 1))
                continue
            raise ProviderError(
                f"{self.provider} answered {r.status_code}" + (f": {message}" if message else ""),
                r.status_code,
            )

    # ------------------------------------------------------------------------------------- per provider

    async def validate(self) -> None:
        """Check that the key can read the usage API (raises AuthError with a clear message otherwise)."""
        raise NotImplementedError

    async def fetch(self, start: datetime, end: datetime) -> list[UsageBucket]:
        """Every bucket in [start, end), all pages. `start`/`end` are aligned to `bucket_width`."""
        raise NotImplementedError

    def check_key_format(self) -> str | None:
        """A message when the key obviously is not an admin/management key (before any request)."""
        return None

    def coverage(self, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
        """The part of [start, end) that `fetch` reported completely (a bucket in it that the provider no
        longer lists was corrected to zero); None when nothing was covered."""
        return (start, end)
