"""One-time, short-lived dashboard sign-in links (table `signin_links`, migration `0075_signin_links`).

`joulestream up` prints a link `…/app/#signin=<token>` for the demo org. The dashboard takes the token out of
the URL at once and exchanges it (`POST /api/v1/dashboard/sign-in`) for a **session key**: an ordinary API key
of the org with the link's scopes, expiring after the session length, which the page keeps in sessionStorage.
So no API key is ever in a URL, and the token in the printed link opens one session, once, within minutes.

Only the SHA-256 of a token is stored. The exchange is one conditional UPDATE (`used_at IS NULL AND
expires_at > now`): of two concurrent exchanges of a token exactly one wins, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update

from controlplane._util import now as _now
from controlplane.errors import Invalid
from controlplane.keys import ApiKeys, normalise_scopes
from controlplane.models import ApiKey
from controlplane.schema import signin_links

SESSION_KEY_NAME = "dashboard session"
TOKEN_BYTES = 32


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    key: ApiKey
    plaintext: str


class SignInLinks:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self, org_id: str, scopes: tuple[str, ...] | str, ttl: timedelta, now: datetime | None = None
    ) -> str:
        """A new link token for `org_id` (shown once; only its hash is kept). Expired links are purged."""
        if ttl <= timedelta(0):
            raise Invalid("a sign-in link needs a positive lifetime")
        now = now or _now()
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self.engine.begin() as conn:
            conn.execute(delete(signin_links).where(signin_links.c.expires_at <= now))
            conn.execute(
                insert(signin_links).values(
                    token_hash=_hash(token),
                    org_id=org_id,
                    scopes=",".join(normalise_scopes(scopes)),
                    created_at=now,
                    expires_at=now + ttl,
                    used_at=None,
                )
            )
        return token

    def exchange(self, token: str, session: timedelta, now: datetime | None = None) -> Session | None:
        """The session key a link opens, or None when the token is unknown, used or expired."""
        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            return None
        now = now or _now()
        h = _hash(token)
        with self.engine.begin() as conn:
            won = conn.execute(
                update(signin_links)
                .where(
                    signin_links.c.token_hash == h,
                    signin_links.c.used_at.is_(None),
                    signin_links.c.expires_at > now,
                )
                .values(used_at=now)
            ).rowcount
            if won != 1:
                return None
            row = conn.execute(
                select(signin_links.c.org_id, signin_links.c.scopes).where(signin_links.c.token_hash == h)
            ).one()
        key, plaintext = ApiKeys(self.engine).create(
            row.org_id, row.scopes, name=SESSION_KEY_NAME, expires_at=now + session
        )
        return Session(key, plaintext)
