"""API keys of an org: create (plaintext shown once), authenticate, list, revoke.

Tenancy: API callers always pass their `org_id`; an id of another org is indistinguishable from an unknown
id (`NotFound` / `None`).

The plaintext (`js_live_` + urlsafe base64 of 32 random bytes) is returned once by `create` and never
stored. The database holds its SHA-256 (hex). A fast unsalted hash is right here: the key carries 256 bits
of randomness, so there is nothing to brute-force or look up in a table; slow password hashes
(bcrypt/argon2) only protect low-entropy secrets and would add ~100 ms to every API request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import Invalid, NotFound
from controlplane.models import ApiKey
from controlplane.schema import SCOPES, api_keys
from controlplane.users import bump_epoch

KEY_PREFIX = "js_live_"
DISPLAY_PREFIX_LEN = len(KEY_PREFIX) + 4  # "js_live_ab12"
LAST_USED_RESOLUTION = timedelta(minutes=1)
_KEY_RE = re.compile(r"^js_live_[A-Za-z0-9_-]{43}$")


def hash_key(plaintext: str) -> str:
    """SHA-256 hex of an API key (see the module docstring for why a fast hash is right)."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def normalise_scopes(scopes: Iterable[str] | str) -> tuple[str, ...]:
    """ "read,admin" or ["admin", "read"] → ("read", "admin") (canonical order); unknown scopes are Invalid."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    wanted = {s.strip().lower() for s in items if s and s.strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise Invalid(f"unknown scope(s) {', '.join(unknown)}; valid scopes: {', '.join(SCOPES)}")
    if not wanted:
        raise Invalid(f"at least one scope is required ({', '.join(SCOPES)})")
    return tuple(s for s in SCOPES if s in wanted)


def _key_model(row) -> ApiKey:
    d = dict(row)
    d["scopes"] = tuple(s for s in d["scopes"].split(",") if s)
    d.pop("key_hash", None)
    return ApiKey.model_validate(d)


class ApiKeys:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        org_id: str,
        scopes: Iterable[str] | str,
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key for `org_id`. Returns the stored key and the plaintext, which is never shown again."""
        scope_t = normalise_scopes(scopes)
        if expires_at is not None and (expires_at.tzinfo is None or expires_at.utcoffset() is None):
            raise Invalid("expires_at must be timezone-aware")
        plaintext = KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
        now = _now()
        row = {
            "id": _new_id(),
            "org_id": org_id,
            "name": (name or "").strip()[:200] or f"key {now:%Y-%m-%d %H:%M}",
            "prefix": plaintext[:DISPLAY_PREFIX_LEN],
            "key_hash": hash_key(plaintext),
            "scopes": ",".join(scope_t),
            "created_at": now,
            "expires_at": expires_at.astimezone(UTC) if expires_at else None,
            "revoked_at": None,
            "last_used_at": None,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(api_keys).values(**row))
        except IntegrityError as exc:  # the only FK is the org
            raise NotFound("organization not found") from exc
        return _key_model(row), plaintext

    def authenticate(self, plaintext: str, now: datetime | None = None) -> ApiKey | None:
        """The key for a presented plaintext, or None when unknown, malformed, revoked or expired.

        Candidates are found by their non-secret display prefix and the hashes compared in constant time.
        `last_used_at` is written at most once per minute per key (no write on most requests)."""
        if not isinstance(plaintext, str) or not _KEY_RE.match(plaintext):
            return None
        now = now or _now()
        presented = hash_key(plaintext)
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(api_keys).where(api_keys.c.prefix == plaintext[:DISPLAY_PREFIX_LEN]))
                .mappings()
                .all()
            )
        match = None
        for row in rows:
            if hmac.compare_digest(row["key_hash"], presented):
                match = row
        if match is None:
            return None
        key = _key_model(match)
        if not key.is_usable(now):
            return None
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
            with self.engine.begin() as conn:
                conn.execute(
                    update(api_keys)
                    .where(
                        api_keys.c.id == key.id,
                        or_(
                            api_keys.c.last_used_at.is_(None),
                            api_keys.c.last_used_at <= now - LAST_USED_RESOLUTION,
                        ),
                    )
                    .values(last_used_at=now)
                )
            key = key.model_copy(update={"last_used_at": now})
        return key

    def get(self, key_id: str, org_id: str | None = None) -> ApiKey | None:
        cond = api_keys.c.id == key_id
        if org_id is not None:
            cond = and_(cond, api_keys.c.org_id == org_id)
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(cond)).mappings().first()
        return _key_model(row) if row else None

    def list(self, org_id: str) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(api_keys)
                    .where(api_keys.c.org_id == org_id)
                    .order_by(api_keys.c.created_at, api_keys.c.id)
                )
                .mappings()
                .all()
            )
        return [_key_model(r) for r in rows]

    def revoke(self, key_id: str, org_id: str | None = None, now: datetime | None = None) -> ApiKey:
        """Revoke a key (idempotent: a revoked key keeps its first revocation time). `org_id=None` is for
        operators (CLI); API callers always pass their org. Bumps the revocation counter, so cached
        credentials (the gateway's) are re-checked on the next request."""
        cond = api_keys.c.id == key_id
        if org_id is not None:
            cond = and_(cond, api_keys.c.org_id == org_id)
        with self.engine.begin() as conn:
            n = conn.execute(
                update(api_keys).where(cond, api_keys.c.revoked_at.is_(None)).values(revoked_at=now or _now())
            ).rowcount
            if n:
                bump_epoch(conn)
        key = self.get(key_id, org_id)
        if key is None:
            raise NotFound("API key not found")
        return key

    def rotate(self, key_id: str, org_id: str, grace: timedelta | None = None) -> tuple[ApiKey, str]:
        """A new secret for a key: a new key with the same name, scopes and expiry; the old one stops at
        once (default) or after `grace`. Returns the new key and its plaintext (shown once)."""
        old = self.get(key_id, org_id)
        if old is None or not old.is_usable(_now()):
            raise NotFound("API key not found")
        new, plaintext = self.create(org_id, old.scopes, old.name, old.expires_at)
        now = _now()
        with self.engine.begin() as conn:
            if grace and grace > timedelta(0):
                until = now + grace
                if old.expires_at is None or old.expires_at > until:
                    conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(expires_at=until))
            else:
                conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now))
            bump_epoch(conn)
        return new, plaintext
