"""First-party sessions: access and refresh JWTs (PyJWT, HS256) for users who sign in with a password.

- access token: `typ=access`, `sub` = user id, `exp` = `settings.auth_access_ttl_s` (15 min). It names no
  org: the org is resolved per request (`X-Org-Slug` with a membership check, else the default membership),
  so a role change or a removed membership takes effect on the next request, not when the token expires.
- refresh token: `typ=refresh`, `jti`, `fam` (its rotation family). Each refresh marks the presented token
  used and issues a new pair in the same family. Presenting a used (or revoked) refresh token is reuse — a
  stolen token raced its owner — and revokes the whole family (both parties must sign in again).

The signing key is `settings.auth_secret`, or a random key generated once in `home/keys/auth.key` (0600).
Issuer and audience are both `joulestream`, so these tokens are never mistaken for the identity provider's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import jwt
from sqlalchemy import Engine, insert, select, update

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.schema import refresh_tokens
from controlplane.users import bump_epoch
from core.files import private_dir, private_file
from core.settings import Settings

ISSUER = AUDIENCE = "joulestream"
ALGORITHM = "HS256"


class SessionError(Exception):
    """The token is not acceptable (→ 401). The message is safe to return."""


def auth_secret(settings: Settings) -> bytes:
    """The first-party JWT key: the setting, else `home/keys/auth.key` (created once, owner-only)."""
    if settings.auth_secret is not None and settings.auth_secret.get_secret_value():
        return settings.auth_secret.get_secret_value().encode()
    path = Path(settings.home) / "keys" / "auth.key"
    if not path.exists():
        private_dir(path.parent)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_hex(32).encode())
        private_file(tmp)
        try:
            tmp.rename(path) if not path.exists() else tmp.unlink()
        except FileNotFoundError:
            pass
    return path.read_bytes().strip()


def is_first_party(token: str) -> bool:
    """Whether a bearer token is one of ours (HS256 header), without verifying it."""
    try:
        return jwt.get_unverified_header(token).get("alg") == ALGORITHM
    except jwt.PyJWTError:
        return False


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"


class Sessions:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.key = auth_secret(settings)
        self.access_ttl = timedelta(seconds=settings.auth_access_ttl_s)
        self.refresh_ttl = timedelta(seconds=settings.auth_refresh_ttl_s)

    def _encode(self, claims: dict) -> str:
        return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, **claims}, self.key, algorithm=ALGORITHM)

    def _decode(self, token: str, typ: str) -> dict:
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=5,
                options={"require": ["exp", "iat", "sub", "typ"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise SessionError("token expired") from exc
        except jwt.PyJWTError as exc:
            raise SessionError("invalid token") from exc
        if claims.get("typ") != typ:
            raise SessionError(f"not an {typ} token" if typ == "access" else f"not a {typ} token")
        return claims

    def issue(self, user_id: str, family_id: str | None = None) -> TokenPair:
        """A new access + refresh pair (a new refresh family unless `family_id`)."""
        now = _now()
        jti = secrets.token_urlsafe(24)
        family = family_id or _new_id()
        with self.engine.begin() as conn:
            conn.execute(
                insert(refresh_tokens).values(
                    jti=jti,
                    user_id=user_id,
                    family_id=family,
                    issued_at=now,
                    expires_at=now + self.refresh_ttl,
                    used_at=None,
                    revoked_at=None,
                )
            )
        iat = int(now.timestamp())
        access = self._encode(
            {
                "sub": user_id,
                "typ": "access",
                "fam": family,
                "iat": iat,
                "exp": iat + int(self.access_ttl.total_seconds()),
            }
        )
        refresh = self._encode(
            {
                "sub": user_id,
                "typ": "refresh",
                "jti": jti,
                "fam": family,
                "iat": iat,
                "exp": iat + int(self.refresh_ttl.total_seconds()),
            }
        )
        return TokenPair(access, refresh, int(self.access_ttl.total_seconds()))

    def verify_access(self, token: str) -> str:
        """The user id of a valid access token whose sign-in (refresh family) is not revoked, or
        SessionError."""
        claims = self._decode(token, "access")
        if self.family_revoked(str(claims.get("fam") or "")):
            raise SessionError("this session was revoked; sign in again")
        return str(claims["sub"])

    def refresh(self, token: str) -> TokenPair:
        """Rotate a refresh token (see the module docstring). SessionError when invalid, expired, revoked or
        reused — reuse also revokes its family."""
        claims = self._decode(token, "refresh")
        jti, family = str(claims.get("jti") or ""), str(claims.get("fam") or "")
        now = _now()
        with self.engine.begin() as conn:
            row = conn.execute(select(refresh_tokens).where(refresh_tokens.c.jti == jti)).mappings().first()
            if row is None or row["family_id"] != family:
                raise SessionError("invalid token")
            if row["used_at"] is None and row["revoked_at"] is None and row["expires_at"] > now:
                # compare-and-set: of two concurrent refreshes with one token, one wins, the other is reuse
                n = conn.execute(
                    update(refresh_tokens)
                    .where(refresh_tokens.c.jti == jti, refresh_tokens.c.used_at.is_(None))
                    .values(used_at=now)
                ).rowcount
                if n == 1:
                    user_id = row["user_id"]
                    reused = False
                else:
                    reused = True
            else:
                reused = row["used_at"] is not None or row["revoked_at"] is not None
                if not reused:
                    raise SessionError("token expired")
        if reused:
            self.revoke_family(family)
            raise SessionError("refresh token reuse detected: every session of this sign-in is revoked")
        return self.issue(user_id, family)

    def revoke_family(self, family_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
            bump_epoch(conn)  # cached access tokens of the family (the gateway's) end on the next request

    def family_revoked(self, family_id: str) -> bool:
        with self.engine.connect() as conn:
            revoked = conn.execute(
                select(refresh_tokens.c.jti)
                .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_not(None))
                .limit(1)
            ).first()
        return revoked is not None
