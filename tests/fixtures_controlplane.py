"""Shared fixtures for tests/controlplane and tests/api (imported by both conftests).

`db_url` is parametrized over SQLite (a file in tmp_path) and PostgreSQL (127.0.0.1:5432, database `test`,
trust auth as `postgres` or `root`): each test gets its own schema `t_<hex>` (selected through the URL's
`options=-csearch_path=…`), dropped afterwards. Set JOULESTREAM_TEST_PG_URL to use another server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from controlplane import dispose_engine, get_engine, upgrade

PG_CANDIDATES = [
    os.environ.get("JOULESTREAM_TEST_PG_URL") or "",
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
]

TINY_FACTORS = """\
version: {version}
published_at: {published_at}
description: tiny test factor set
tiers:
  small:
    description: small models
    point: {{prefill: 0.1, decode: 0.5, cached: 0.01, cache_creation: 0.12}}
    low: {{prefill: 0.05, decode: 0.2, cached: 0.005, cache_creation: 0.06}}
    high: {{prefill: 0.3, decode: 1.5, cached: 0.03, cache_creation: 0.36}}
    sources: [s1]
  large:
    description: large models
    point: {{prefill: 0.5, decode: 3.0, cached: 0.05, cache_creation: 0.6}}
    low: {{prefill: 0.1, decode: 1.0, cached: 0.01, cache_creation: 0.12}}
    high: {{prefill: 2.5, decode: 10.0, cached: 0.5, cache_creation: 3.0}}
    sources: [s1]
model_patterns:
  - {{pattern: "gpt-4o-mini*", tier: small}}
  - {{pattern: "gpt-4o*", tier: large}}
fallback_tier: large
pue: {{openai: 1.2}}
default_pue: 1.3
grid: {{openai: {{default: 0.37, us-east-1: 0.416}}}}
default_grid_intensity: 0.481
sources: {{s1: "A test citation"}}
"""


def tiny_factors(version: str = "v9.0", published_at: str = "2030-01-01") -> str:
    return TINY_FACTORS.format(version=version, published_at=published_at)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine | None]:
    """An AUTOCOMMIT engine on the test PostgreSQL, or None when none is reachable."""
    for url in filter(None, PG_CANDIDATES):
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            engine.dispose()
            continue
        yield engine
        engine.dispose()
        return
    yield None


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'control.db'}"
        yield url
        dispose_engine(url)
        return
    yield from pg_schema_url(request.getfixturevalue("pg_admin"))


def pg_schema_url(admin: Engine | None) -> Iterator[str]:
    """A URL on the test PostgreSQL whose search_path is a fresh schema, dropped afterwards (a fixture body)."""
    if admin is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database test)")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    base = admin.url.render_as_string(hide_password=False)
    url = (
        make_url(base)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    try:
        yield url
    finally:
        dispose_engine(url)
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
def engine(db_url) -> Engine:
    """A migrated control-plane engine (empty tables, factor versions not seeded)."""
    eng = get_engine(db_url)
    upgrade(eng)
    return eng


# --------------------------------------------------------------------------------------------- JWKS / JWT

ISSUER = "https://idp.test.joulestream.local/"
AUDIENCE = "joulestream-api"


class JwksServer:
    """A local OIDC-style JWKS endpoint (http.server on 127.0.0.1, random port) with one key per algorithm,
    all generated in the test session, and a token minter."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

        self.keys = {
            "RS256": ("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
            "ES256": ("ec-1", ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
            "EdDSA": ("ed-1", ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm),
        }
        jwks = []
        for alg, (kid, private, algo) in self.keys.items():
            jwk = algo.to_jwk(private.public_key(), as_dict=True)
            jwk.update({"kid": kid, "use": "sig", "alg": alg})
            jwks.append(jwk)
        body = json.dumps({"keys": jwks}).encode()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def settings(self, **overrides):
        from controlplane.jwt import JwtSettings

        return JwtSettings(**{"jwks_url": self.url, "issuer": ISSUER, "audience": AUDIENCE, **overrides})

    def token(
        self, alg: str = "RS256", *, kid: str | None = None, headers: dict | None = None, **claims
    ) -> str:
        import time

        import jwt

        key_id, private, _ = self.keys[alg]
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user_123", "iat": now, "exp": now + 300, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, private, algorithm=alg, headers={"kid": kid or key_id, **(headers or {})})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()
