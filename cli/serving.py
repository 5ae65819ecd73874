"""How the commands start their HTTP servers (uvicorn): the options every server shares.

Forwarded headers (`X-Forwarded-For`, `X-Forwarded-Proto`) are trusted only from the proxies listed in
`JOULESTREAM_FORWARDED_ALLOW_IPS` (addresses or networks, comma-separated; `*` for any): with none listed
— the default — uvicorn's proxy-header handling is off and the client address is always the peer's, so a
client cannot pick its own address for the public rate limits (core/ratelimit.py) by sending the header.
uvicorn's own default would trust 127.0.0.1, which is every local client of a loopback server.
"""

from __future__ import annotations

from typing import Any

from core.settings import Settings


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn `Config` keywords: proxy headers from the configured proxies only."""
    trusted = ",".join(e.strip() for e in settings.forwarded_allow_ips.split(",") if e.strip())
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or "127.0.0.1"}
