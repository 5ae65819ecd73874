"""Per-client rate limits for the unauthenticated routes (the API's public receipt verification, the
gateway's receipt public key), on the `limits` library: a moving window per client address, kept in
`settings.rate_limit_storage` — `memory://` (the default: per process, what the embedded runtime needs) or
a shared store such as `redis://host:6379` when several API/gateway processes serve one deployment (the
redis client must then be installed: `pip install 'limits[redis]'`).

The client address is the connection's peer, or — only when the request came through a proxy listed in
`settings.forwarded_allow_ips` — the address that proxy forwarded (uvicorn applies the X-Forwarded-For
header for trusted proxies only; cli/serving.py). IPv6 clients are counted per /64, the block one
subscriber usually holds, so rotating addresses within it buys nothing.
"""

from __future__ import annotations

import ipaddress
import math
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from core.settings import Settings


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


class PublicRateLimit:
    """`check(scope, host)` → None when the request may go on, else the seconds to wait (Retry-After)."""

    def __init__(self, limit: str = "60/minute", storage: str = "memory://") -> None:
        self.item: RateLimitItem = parse(limit)
        self.description = limit
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage))

    @classmethod
    def from_settings(cls, settings: Settings) -> PublicRateLimit:
        return cls(settings.public_rate_limit, settings.rate_limit_storage)

    def check(self, scope: str, host: str | None) -> float | None:
        key = client_key(host)
        if self.limiter.hit(self.item, scope, key):
            return None
        reset = self.limiter.get_window_stats(self.item, scope, key).reset_time
        return max(1.0, math.ceil(reset - time.time()))
