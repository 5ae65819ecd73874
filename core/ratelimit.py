"""Every rate limit of joulestream, on the `limits` library, in one store: `settings.rate_limit_storage` —
`memory://` (the default: per process, what the embedded runtime needs) or a shared store such as
`redis://host:6379` when several API/gateway replicas serve one deployment, so that N replicas still give a
client or an org its limit once, not N times (docs/deployment.md).

Two users, one `Limiter`:

* the unauthenticated routes (the API's public receipt verification, the gateway's receipt public key):
  `PublicRateLimit`, a moving window per client address;
* the gateway's per-org request and token budgets (pipelines/gateway/budgets.py): a request takes one unit of
  a moving window up front (`take`); the token budget must not be spent to start a request (`spent`) and is
  charged the request's actual tokens when it ends (`charge`, a fixed-window counter that records every
  charge, so one request can overdraw it and the next waits for the window to reset).

A limit of `amount` with a burst `b` is one window of `b` units over `b / rate` seconds (the default burst, a
minute's worth, is a 60 s window): at most `b` in any such window, `rate` on average.

The store is a network service in server mode: a call costs one Redis round trip (~0.1–0.3 ms on a LAN). If
the store fails, the limiter lets the request through and logs (a rate limit must never take the service
down); the failure is counted in `errors`.

The client address is the connection's peer, or — only when the request came through a proxy listed in
`settings.forwarded_allow_ips` — the address that proxy forwarded (uvicorn applies the X-Forwarded-For
header for trusted proxies only; cli/serving.py). IPv6 clients are counted per /64, the block one
subscriber usually holds, so rotating addresses within it buys nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from urllib.parse import urlsplit

from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.errors import StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from core.settings import Settings

log = logging.getLogger(__name__)
NETWORK_TIMEOUT_S = 0.5  # a shared store that does not answer in this long is treated as failed (fail open)
KEY_PREFIX = "joulestream"
# what a store that is down raises (network stores are opened with wrap_exceptions: their errors are StorageError)
STORE_ERRORS = (StorageError, ConnectionError, TimeoutError, OSError)


def client_key(host: str | None) -> str:
    """The rate-limit key of a client address: the IPv4 address, or the IPv6 /64 it belongs to."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def rate_item(per_minute: float, burst: float | None = None) -> RateLimitItem:
    """`per_minute` on average with bursts of `burst` (default: one minute's worth): `burst` units per window
    of `burst / rate` seconds, rounded to whole units and seconds (at least 1 of each)."""
    amount = max(1, round(burst if burst is not None else per_minute))
    seconds = max(1, round(amount * 60.0 / per_minute))
    return RateLimitItemPerSecond(amount, seconds)


def open_storage(uri: str) -> Storage:
    """The `limits` store named by `uri`; network stores get short timeouts and a joulestream key prefix."""
    if uri.startswith("memory://"):
        return storage_from_string(uri)
    options: dict[str, float | str | bool] = {"key_prefix": KEY_PREFIX, "wrap_exceptions": True}
    if uri.startswith(("redis://", "rediss://", "redis+unix://", "valkey://")):
        options.update(socket_timeout=NETWORK_TIMEOUT_S, socket_connect_timeout=NETWORK_TIMEOUT_S)
    return storage_from_string(uri, **options)


class Limiter:
    """The one rate limiter: moving windows (`take`) and charged counters (`spent`/`charge`) in one store.

    Each method answers 0.0 (go on) or the seconds to wait (Retry-After, at least 1)."""

    def __init__(self, storage: str = "memory://") -> None:
        self.uri = storage
        parsed = urlsplit(storage)
        self.label = f"{parsed.scheme}://{parsed.hostname or ''}{f':{parsed.port}' if parsed.port else ''}"  # no password
        self.network = not storage.startswith("memory://")
        self.storage = open_storage(storage)
        self.moving = MovingWindowRateLimiter(self.storage)
        self.fixed = FixedWindowRateLimiter(self.storage)
        self.errors = 0
        self._logged_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Limiter:
        return cls(settings.rate_limit_storage)

    def _failed(self, what: str, exc: Exception) -> float:
        self.errors += 1
        now = time.monotonic()
        if now - self._logged_at > 10:
            self._logged_at = now
            log.warning(
                "rate-limit store %s failed on %s (%s); letting requests through",
                self.label,
                what,
                type(exc).__name__,
            )
        return 0.0

    @staticmethod
    def _wait(reset_time: float) -> float:
        return float(max(1, math.ceil(reset_time - time.time())))

    def take(self, item: RateLimitItem, *key: str, cost: int = 1) -> float:
        """Take `cost` units from a moving window: 0.0, or (nothing taken) the seconds until it could be."""
        try:
            if self.moving.hit(item, *key, cost=cost):
                return 0.0
            return self._wait(self.moving.get_window_stats(item, *key).reset_time)
        except STORE_ERRORS as exc:
            return self._failed("take", exc)

    def spent(self, item: RateLimitItem, *key: str) -> float:
        """0.0 while the charged counter is below its amount, else the seconds until its window resets."""
        try:
            if self.fixed.test(item, *key):
                return 0.0
            return self._wait(self.fixed.get_window_stats(item, *key).reset_time)
        except STORE_ERRORS as exc:
            return self._failed("spent", exc)

    def charge(self, item: RateLimitItem, *key: str, cost: int) -> None:
        """Add `cost` to the charged counter, even beyond its amount (the overdraw is remembered)."""
        if cost <= 0:
            return
        try:
            self.fixed.hit(item, *key, cost=cost)
        except STORE_ERRORS as exc:
            self._failed("charge", exc)

    def clear(self, item: RateLimitItem, *key: str) -> None:
        self.storage.clear(item.key_for(*key))


class PublicRateLimit:
    """`check(scope, host)` → None when the request may go on, else the seconds to wait (Retry-After)."""

    def __init__(self, limit: str = "60/minute", storage: str | Limiter = "memory://") -> None:
        self.item: RateLimitItem = parse(limit)
        self.description = limit
        self.limiter = storage if isinstance(storage, Limiter) else Limiter(storage)

    @classmethod
    def from_settings(cls, settings: Settings) -> PublicRateLimit:
        return cls(settings.public_rate_limit, settings.rate_limit_storage)

    def check(self, scope: str, host: str | None) -> float | None:
        wait = self.limiter.take(self.item, scope, client_key(host))
        return wait or None
