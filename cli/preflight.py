"""The start-up check of the long-running commands (`up`, `worker`, `gateway`, `poll`): every problem of
the configuration found before anything starts, and named all at once.

    problems = check(settings, needs_secrets=True, ports={"--http-port": 8787})
    if problems: print each, exit 2

What it checks (each message names the variable or option to fix):
- the home: a directory (or creatable), writable;
- the secret store: `JOULESTREAM_MASTER_KEY` set when the local store needs one (outside the embedded demo,
  for the commands that poll providers: `up`, `poll`) and well formed whenever it is set; boto3 present for
  `JOULESTREAM_SECRET_STORE=aws`;
- `JOULESTREAM_SIGNING_KEY` well formed when set;
- JWT auth: `JOULESTREAM_JWT_JWKS_URL`, `_ISSUER`, `_AUDIENCE` all set or none;
- `JOULESTREAM_FORWARDED_ALLOW_IPS`: addresses or networks (or `*`); `JOULESTREAM_RATE_LIMIT_STORAGE`: a
  storage the `limits` library can open;
- a gateway routing file that exists and parses;
- the TCP ports the command will listen on are free.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import ipaddress
import os
from pathlib import Path

from cli.broker import port_open
from core.settings import Settings


def _home(settings: Settings) -> list[str]:
    home = settings.home
    existing = next((p for p in (home, *home.parents) if p.exists()), None)
    if home.exists() and not home.is_dir():
        return [f"JOULESTREAM_HOME={home} is not a directory"]
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        return [f"JOULESTREAM_HOME={home}: {existing} is not writable by this user"]
    return []


def _secrets(settings: Settings, needs_secrets: bool) -> list[str]:
    from core.secrets import MASTER_KEY_ENV, parse_master_key

    out = []
    if settings.master_key is not None:
        try:
            parse_master_key(settings.master_key.get_secret_value())
        except ValueError as exc:
            out.append(str(exc))
    elif needs_secrets and settings.secret_store == "local" and not settings.embedded_demo:
        out.append(
            f"{MASTER_KEY_ENV} is not set: it encrypts the provider keys the pollers read, and only the "
            "embedded demo (no JOULESTREAM_KAFKA / JOULESTREAM_DATABASE) generates its own. Set it to 32 random "
            'bytes, base64: python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'
        )
    if settings.secret_store == "aws" and importlib.util.find_spec("boto3") is None:
        out.append("JOULESTREAM_SECRET_STORE=aws needs boto3 installed (pip install boto3)")
    return out


def _signing_key(settings: Settings) -> list[str]:
    if settings.signing_key is None:
        return []
    try:
        seed = base64.b64decode(settings.signing_key.get_secret_value().strip(), validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    return [] if len(seed) == 32 else ["JOULESTREAM_SIGNING_KEY must be base64 of a 32-byte Ed25519 seed"]


def _jwt(settings: Settings) -> list[str]:
    fields = {
        "JOULESTREAM_JWT_JWKS_URL": settings.jwt_jwks_url,
        "JOULESTREAM_JWT_ISSUER": settings.jwt_issuer,
        "JOULESTREAM_JWT_AUDIENCE": settings.jwt_audience,
    }
    missing = [name for name, v in fields.items() if not v]
    if not missing or len(missing) == len(fields):
        return []
    given = [name for name in fields if name not in missing]
    return [
        f"JWT auth is half configured: {', '.join(given)} set but {', '.join(missing)} not (set all three)"
    ]


def _http(settings: Settings) -> list[str]:
    out = []
    for entry in (e.strip() for e in settings.forwarded_allow_ips.split(",")):
        if not entry or entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            out.append(f"JOULESTREAM_FORWARDED_ALLOW_IPS: {entry!r} is not an IP address or network")
    from limits.errors import ConfigurationError
    from limits.storage import storage_from_string

    try:
        storage_from_string(settings.rate_limit_storage)
    except (ConfigurationError, ValueError) as exc:  # unknown scheme, missing client package
        out.append(f"JOULESTREAM_RATE_LIMIT_STORAGE={settings.rate_limit_storage!r}: {exc}")
    return out


def _routes(routes: Path | None) -> list[str]:
    if routes is None:
        return []
    from pipelines.gateway.config import RoutesError, load_routes

    try:
        load_routes(routes)
    except (RoutesError, OSError, ValueError) as exc:
        return [f"gateway routing file ({routes}): {exc}"]
    return []


def check(
    settings: Settings,
    *,
    needs_secrets: bool = False,
    routes: Path | None = None,
    ports: dict[str, int] | None = None,
    host: str = "127.0.0.1",
) -> list[str]:
    """Every configuration problem found, in a stable order (empty when the command may start)."""
    problems = [
        *_home(settings),
        *_secrets(settings, needs_secrets),
        *_signing_key(settings),
        *_jwt(settings),
        *_http(settings),
        *_routes(routes),
    ]
    for what, port in (ports or {}).items():
        if port_open("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port):
            problems.append(f"{what}: port {port} is already in use")
    return problems
