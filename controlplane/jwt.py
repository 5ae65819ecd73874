"""Bearer JWTs from an OIDC provider (Clerk, Auth0, Keycloak, …), verified against its JWKS.

Enabled when all of these are set (fields `jwt_*` of `core.settings.Settings`):

| variable                             | meaning                                                  | default  |
|--------------------------------------|----------------------------------------------------------|----------|
| JOULESTREAM_JWT_JWKS_URL             | JWKS endpoint of the identity provider                   | (off)    |
| JOULESTREAM_JWT_ISSUER               | required `iss`                                           | (off)    |
| JOULESTREAM_JWT_AUDIENCE             | required `aud`                                           | (off)    |
| JOULESTREAM_JWT_ORG_CLAIM            | claim holding the org slug                               | org_slug |
| JOULESTREAM_JWT_MEMBERSHIPS_CLAIM    | claim listing the slugs the subject may act for          | orgs     |

Accepted algorithms: RS256, ES256, EdDSA (the header's `alg` must match the JWKS key's type; `none` and
HMAC are refused). `exp`, `iss`, `aud` and `sub` are required; 30 s of clock skew is allowed. Keys are
fetched with PyJWT's `PyJWKClient` and cached (JWK set 5 min; an unknown `kid` refetches, rate-limited).

Org: the `X-Org-Slug` header, when sent, must be in the memberships claim (or equal the org claim);
otherwise the org claim is used, or the only membership. Scopes come from `scope` (space-separated, OAuth)
or `scopes` (list or string); unknown scope names (openid, email, …) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError

from controlplane.schema import SCOPES
from core.settings import Settings

ALGORITHMS = ("RS256", "ES256", "EdDSA")


class JwtError(Exception):
    """The token is not acceptable (→ 401). The message is safe to return."""


class JwtForbidden(Exception):
    """The token is valid but does not grant the requested org (→ 403)."""


class JwksUnavailable(Exception):
    """The identity provider's JWKS could not be fetched (→ 503)."""


@dataclass(frozen=True)
class JwtSettings:
    jwks_url: str
    issuer: str
    audience: str
    org_claim: str = "org_slug"
    memberships_claim: str = "orgs"
    algorithms: tuple[str, ...] = ALGORITHMS
    leeway_s: float = 30.0
    jwks_cache_s: float = 300.0
    jwks_timeout_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtSettings | None:
        """The JWT settings, or None when JWT auth is not configured (JWKS URL, issuer or audience unset)."""
        if not (settings.jwt_jwks_url and settings.jwt_issuer and settings.jwt_audience):
            return None
        return cls(
            jwks_url=settings.jwt_jwks_url,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            org_claim=settings.jwt_org_claim or "org_slug",
            memberships_claim=settings.jwt_memberships_claim or "orgs",
        )


@dataclass(frozen=True)
class JwtIdentity:
    subject: str
    org_slug: str | None
    memberships: tuple[str, ...]
    scopes: tuple[str, ...]
    claims: dict[str, Any] = field(repr=False, compare=False)

    def org_for(self, requested_slug: str | None) -> str:
        """The org slug this request acts for (see the module docstring). Raises JwtForbidden."""
        if requested_slug:
            slug = requested_slug.strip().lower()
            if slug in self.memberships or slug == self.org_slug:
                return slug
            raise JwtForbidden(f"not a member of organization {slug!r}")
        if self.org_slug:
            return self.org_slug
        if len(self.memberships) == 1:
            return self.memberships[0]
        raise JwtForbidden("the token names no organization; send the X-Org-Slug header")


def _as_slugs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[Any] = re.split(r"[\s,]+", value)
    elif isinstance(value, Mapping):  # e.g. {"acme": "admin"}
        items = list(value)
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return ()
    return tuple(dict.fromkeys(s.strip().lower() for s in items if isinstance(s, str) and s.strip()))


def scopes_from_claims(claims: Mapping[str, Any]) -> tuple[str, ...]:
    raw: set[str] = set()
    for name in ("scope", "scopes"):
        raw.update(_as_slugs(claims.get(name)))
    return tuple(s for s in SCOPES if s in raw)


class JwtVerifier:
    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self._jwks = PyJWKClient(
            settings.jwks_url,
            cache_keys=True,
            lifespan=settings.jwks_cache_s,
            timeout=settings.jwks_timeout_s,
        )

    def verify(self, token: str) -> JwtIdentity:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise JwtError("malformed token") from exc
        alg = header.get("alg")
        if alg not in s.algorithms:
            raise JwtError(f"unsupported token algorithm {alg!r}; accepted: {', '.join(s.algorithms)}")
        try:
            signing_key = self._jwks.get_signing_key_from_jwt(token)
        except PyJWKClientConnectionError as exc:
            raise JwksUnavailable("the identity provider's key set is unavailable") from exc
        except (PyJWKClientError, jwt.PyJWTError) as exc:
            raise JwtError("token signed by an unknown key") from exc
        if signing_key.algorithm_name != alg:
            raise JwtError(f"token algorithm {alg} does not match its key ({signing_key.algorithm_name})")
        try:
            claims = jwt.decode(
                token,
                signing_key.key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise JwtError("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise JwtError("token audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise JwtError("token issuer is not accepted") from exc
        except jwt.PyJWTError as exc:
            raise JwtError(f"invalid token: {exc}") from exc
        org = claims.get(s.org_claim)
        return JwtIdentity(
            subject=str(claims["sub"]),
            org_slug=org.strip().lower() if isinstance(org, str) and org.strip() else None,
            memberships=_as_slugs(claims.get(s.memberships_claim)),
            scopes=scopes_from_claims(claims),
            claims=claims,
        )
