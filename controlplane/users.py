"""Users, their memberships of orgs (role admin|member|viewer, one default per user), the revocation counter
and the per-org audit log.

Users sign in either through the identity provider (Clerk: `external_id`, created by the identity webhook,
`controlplane.identity`) or with an email and password (argon2id, `argon2-cffi`; `joulestream users
create`). Roles map to the API scopes (`ROLE_SCOPES`): admin → read, ingest, admin, billing; member → read,
ingest; viewer → read.

The revocation counter (`auth_epochs`, one row): every change that must end access at once — a key revoked
or rotated, a role changed, a membership removed, a user deleted — bumps it in the same transaction. The
gateway keeps its auth cache but compares the counter on each request (one primary-key read) and drops the
cache when it moved, so the change takes effect on the next request (docs/tenancy.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import Conflict, Invalid, NotFound
from controlplane.schema import ROLES, audit_log, auth_epochs, memberships, organizations, users

Role = Literal["admin", "member", "viewer"]
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset({"read", "ingest", "admin", "billing"}),
    "member": frozenset({"read", "ingest"}),
    "viewer": frozenset({"read"}),
}
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("joulestream: equal work for unknown accounts")
MIN_PASSWORD = 10


class User(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    email: str | None
    name: str | None
    external_id: str | None
    created_at: datetime
    deleted_at: datetime | None = None


class Membership(BaseModel):
    model_config = ConfigDict(frozen=True)

    org_id: str
    org_slug: str
    org_name: str
    user_id: str
    email: str | None
    role: Role
    is_default: bool
    created_at: datetime


def _user(row: Any) -> User:
    d = dict(row)
    d.pop("password_hash", None)
    return User.model_validate(d)


def bump_epoch(conn: Connection) -> None:
    """Advance the revocation counter inside the caller's transaction."""
    conn.execute(update(auth_epochs).where(auth_epochs.c.id == 1).values(epoch=auth_epochs.c.epoch + 1))


def current_epoch(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(auth_epochs.c.epoch).where(auth_epochs.c.id == 1)).scalar_one())


def audit(
    conn: Connection, org_id: str, actor: str, action: str, target: str | None = None, **detail: Any
) -> None:
    """Append one audit entry inside the caller's transaction (the log is append-only: no update, no
    delete anywhere)."""
    conn.execute(
        insert(audit_log).values(
            org_id=org_id,
            at=_now(),
            actor=actor[:200],
            action=action[:60],
            target=target[:200] if target else None,
            detail=orjson.dumps(detail).decode() if detail else None,
        )
    )


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, org_id: str, actor: str, action: str, target: str | None = None, **detail: Any) -> None:
        with self.engine.begin() as conn:
            audit(conn, org_id, actor, action, target, **detail)

    def list(self, org_id: str, *, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(audit_log).where(audit_log.c.org_id == org_id)
            ).scalar_one()
            rows = conn.execute(
                select(audit_log)
                .where(audit_log.c.org_id == org_id)
                .order_by(audit_log.c.id.desc())
                .offset(offset)
                .limit(limit)
            ).mappings()
            items = [
                {
                    "id": r["id"],
                    "at": r["at"],
                    "actor": r["actor"],
                    "action": r["action"],
                    "target": r["target"],
                    "detail": orjson.loads(r["detail"]) if r["detail"] else {},
                }
                for r in rows
            ]
        return items, int(total)


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or len(email) > 320 or email.startswith("@") or email.endswith("@"):
        raise Invalid("a valid email address is required")
    return email


class Users:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        email: str | None,
        password: str | None = None,
        *,
        name: str | None = None,
        external_id: str | None = None,
    ) -> User:
        if password is not None and len(password) < MIN_PASSWORD:
            raise Invalid(f"the password must have at least {MIN_PASSWORD} characters")
        row = {
            "id": _new_id(),
            "email": normalise_email(email) if email else None,
            "name": (name or "").strip()[:200] or None,
            "password_hash": _hasher.hash(password) if password is not None else None,
            "external_id": external_id,
            "created_at": _now(),
            "deleted_at": None,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(users).values(**row))
        except IntegrityError as exc:
            raise Conflict("a user with this email or identity already exists") from exc
        return _user(row)

    def get(self, user_id: str) -> User | None:
        return self._one(users.c.id == user_id)

    def by_email(self, email: str) -> User | None:
        return self._one(users.c.email == email.strip().lower())

    def by_external_id(self, external_id: str) -> User | None:
        return self._one(users.c.external_id == external_id)

    def active(self, user_id: str) -> User | None:
        u = self.get(user_id)
        return u if u is not None and u.deleted_at is None else None

    def authenticate(self, email: str, password: str) -> User | None:
        """The user for an email and password, or None. Unknown emails cost the same argon2 work."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.email == email.strip().lower())).mappings().first()
        stored = row["password_hash"] if row is not None and row["deleted_at"] is None else None
        try:
            _hasher.verify(stored or _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if stored is None or row is None:
            return None
        if _hasher.check_needs_rehash(stored):
            with self.engine.begin() as conn:
                conn.execute(
                    update(users).where(users.c.id == row["id"]).values(password_hash=_hasher.hash(password))
                )
        return _user(row)

    def upsert_external(self, external_id: str, email: str | None, name: str | None) -> User:
        """The identity provider's user, created or updated (email, name)."""
        u = self.by_external_id(external_id)
        if u is None:
            try:
                return self.create(email, name=name, external_id=external_id)
            except Conflict:
                u = self.by_external_id(external_id)
                if u is None:  # the email belongs to a local user: link it
                    local = self.by_email(email) if email else None
                    if local is None:
                        raise
                    with self.engine.begin() as conn:
                        conn.execute(
                            update(users).where(users.c.id == local.id).values(external_id=external_id)
                        )
                    u = self.get(local.id)
                    assert u is not None
                return u
        values: dict[str, Any] = {"deleted_at": None}
        if email:
            values["email"] = normalise_email(email)
        if name:
            values["name"] = name[:200]
        try:
            with self.engine.begin() as conn:
                conn.execute(update(users).where(users.c.id == u.id).values(**values))
        except IntegrityError:  # the email is another user's: keep ours
            pass
        out = self.get(u.id)
        assert out is not None
        return out

    def delete(self, user_id: str) -> None:
        """Soft-delete: memberships removed, refresh tokens revoked, access ends on the next request."""
        from controlplane.schema import refresh_tokens

        now = _now()
        with self.engine.begin() as conn:
            orgs = conn.execute(
                select(memberships.c.org_id).where(memberships.c.user_id == user_id)
            ).scalars()
            for org_id in list(orgs):
                audit(
                    conn, org_id, "identity_provider", "member.removed", f"user:{user_id}", reason="deleted"
                )
            conn.execute(delete(memberships).where(memberships.c.user_id == user_id))
            conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            conn.execute(update(users).where(users.c.id == user_id).values(deleted_at=now))
            bump_epoch(conn)

    def _one(self, cond) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(cond)).mappings().first()
        return _user(row) if row else None


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role


_MEMBER_COLS = (
    memberships.c.org_id,
    organizations.c.slug.label("org_slug"),
    organizations.c.name.label("org_name"),
    memberships.c.user_id,
    users.c.email,
    memberships.c.role,
    memberships.c.is_default,
    memberships.c.created_at,
)


def _member_query():
    return select(*_MEMBER_COLS).select_from(
        memberships.join(organizations, organizations.c.id == memberships.c.org_id).join(
            users, users.c.id == memberships.c.user_id
        )
    )


class Memberships:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def for_user(self, user_id: str) -> list[Membership]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                _member_query().where(memberships.c.user_id == user_id).order_by(organizations.c.slug)
            ).mappings()
            return [Membership.model_validate(dict(r)) for r in rows]

    def for_org(self, org_id: str) -> list[Membership]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                _member_query().where(memberships.c.org_id == org_id).order_by(memberships.c.created_at)
            ).mappings()
            return [Membership.model_validate(dict(r)) for r in rows]

    def get(self, org_id: str, user_id: str) -> Membership | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    _member_query().where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
                )
                .mappings()
                .first()
            )
        return Membership.model_validate(dict(row)) if row else None

    def resolve(self, user_id: str, slug: str | None) -> Membership | None:
        """The membership a request acts through: the org `slug` names (None when not a member), else the
        default membership, else the only one. None when there is none to pick."""
        mine = self.for_user(user_id)
        if slug:
            wanted = slug.strip().lower()
            return next((m for m in mine if m.org_slug == wanted), None)
        return next((m for m in mine if m.is_default), None) or (mine[0] if len(mine) == 1 else None)

    def add(self, org_id: str, user_id: str, role: str, *, actor: str) -> Membership:
        _check_role(role)
        now = _now()
        try:
            with self.engine.begin() as conn:
                has_default = conn.execute(
                    select(memberships.c.org_id).where(
                        memberships.c.user_id == user_id, memberships.c.is_default.is_(True)
                    )
                ).first()
                conn.execute(
                    insert(memberships).values(
                        org_id=org_id,
                        user_id=user_id,
                        role=role,
                        is_default=has_default is None,
                        created_at=now,
                    )
                )
                audit(conn, org_id, actor, "member.added", f"user:{user_id}", role=role)
                bump_epoch(conn)  # a cached "no membership" answer ends too
        except IntegrityError as exc:
            raise Conflict("this user is already a member of the organization") from exc
        m = self.get(org_id, user_id)
        assert m is not None
        return m

    def _admins(self, conn: Connection, org_id: str) -> int:
        return int(
            conn.execute(
                select(func.count())
                .select_from(memberships)
                .where(memberships.c.org_id == org_id, memberships.c.role == "admin")
            ).scalar_one()
        )

    @staticmethod
    def _role_of(conn: Connection, org_id: str, user_id: str) -> str:
        cur = conn.execute(
            select(memberships.c.role).where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
        ).scalar_one_or_none()
        if cur is None:
            raise NotFound("member not found")
        return cur

    def set_role(self, org_id: str, user_id: str, role: str, *, actor: str) -> Membership:
        _check_role(role)
        with self.engine.begin() as conn:
            cur = self._role_of(conn, org_id, user_id)
            if cur == "admin" and role != "admin" and self._admins(conn, org_id) <= 1:
                raise Conflict(
                    "the last admin of an organization cannot be demoted; make another admin first"
                )
            if cur != role:
                conn.execute(
                    update(memberships)
                    .where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
                    .values(role=role)
                )
                audit(conn, org_id, actor, "member.role_changed", f"user:{user_id}", role=role, previous=cur)
                bump_epoch(conn)
        m = self.get(org_id, user_id)
        assert m is not None
        return m

    def remove(self, org_id: str, user_id: str, *, actor: str, allow_last_admin: bool = False) -> None:
        with self.engine.begin() as conn:
            cur = self._role_of(conn, org_id, user_id)
            if cur == "admin" and not allow_last_admin and self._admins(conn, org_id) <= 1:
                raise Conflict(
                    "the last admin of an organization cannot be removed; make another admin first"
                )
            conn.execute(
                delete(memberships).where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
            )
            audit(conn, org_id, actor, "member.removed", f"user:{user_id}", role=cur)
            bump_epoch(conn)

    def set_default(self, user_id: str, org_id: str) -> Membership:
        with self.engine.begin() as conn:
            if (
                conn.execute(
                    select(memberships.c.org_id).where(
                        memberships.c.org_id == org_id, memberships.c.user_id == user_id
                    )
                ).first()
                is None
            ):
                raise NotFound("organization not found")
            conn.execute(update(memberships).where(memberships.c.user_id == user_id).values(is_default=False))
            conn.execute(
                update(memberships)
                .where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
                .values(is_default=True)
            )
            bump_epoch(conn)
        m = self.get(org_id, user_id)
        assert m is not None
        return m


def scopes_for(role: str) -> frozenset[str]:
    return ROLE_SCOPES.get(role, frozenset())
