"""The identity provider's events (Clerk, delivered by Svix; verified in `api/routers/auth.py`), applied once
per event id (`identity_events`).

| event                               | effect                                                               |
|-------------------------------------|----------------------------------------------------------------------|
| `user.created`, `user.updated`      | the user (by the provider's id), with its primary email and name     |
| `user.deleted`                      | the user soft-deleted: memberships removed, sessions revoked         |
| `organization.created`              | the org (free plan), its Default project, the creator as admin       |
| `organizationMembership.created/updated` | the membership, role `org:admin` → admin, `*viewer*` → viewer, else member |
| `organizationMembership.deleted`    | the membership removed (the provider is authoritative: even the last admin) |
| anything else                       | ignored (recorded, 200)                                              |

Each effect is idempotent by the provider's ids, and the event id is recorded after it: a replay is
answered "duplicate" and changes nothing; a crash between the two re-applies an idempotent effect.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from controlplane._util import now as _now
from controlplane.errors import Conflict, ControlPlaneError, NotFound
from controlplane.orgs import SLUG_RE, Orgs
from controlplane.projects import Projects
from controlplane.schema import external_orgs, identity_events
from controlplane.users import Memberships, User, Users

ACTOR = "identity_provider"


def _seen(engine: Engine, event_id: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(select(identity_events.c.id).where(identity_events.c.id == event_id)).first()
            is not None
        )


def _record(engine: Engine, event_id: str, etype: str, outcome: str) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(identity_events).values(
                    id=event_id[:255], type=etype[:100], outcome=outcome[:200], received_at=_now()
                )
            )
    except IntegrityError:  # recorded concurrently by a parallel delivery: the effect is idempotent
        pass


def _slugify(value: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", value.strip().lower()).strip("-")[:57].strip("-")
    return s or "org"


def _primary_email(data: Mapping[str, Any]) -> str | None:
    primary = data.get("primary_email_address_id")
    emails = data.get("email_addresses") or []
    for e in emails:
        if isinstance(e, Mapping) and (primary is None or e.get("id") == primary):
            addr = e.get("email_address")
            if isinstance(addr, str) and "@" in addr:
                return addr
    return None


def _name(data: Mapping[str, Any]) -> str | None:
    parts = [data.get("first_name"), data.get("last_name")]
    name = " ".join(p for p in parts if isinstance(p, str) and p)
    return name or None


def _user_for(engine: Engine, external_id: str, email: str | None = None) -> User:
    users = Users(engine)
    return users.by_external_id(external_id) or users.upsert_external(external_id, email, None)


def _org_for(engine: Engine, external_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(external_orgs.c.org_id).where(external_orgs.c.external_id == external_id)
        ).scalar_one_or_none()


def _role(value: Any) -> str:
    role = str(value or "").lower()
    if role.endswith("admin"):
        return "admin"
    if "viewer" in role:
        return "viewer"
    return "member"


def _create_org(engine: Engine, data: Mapping[str, Any]) -> str:
    ext = str(data.get("id") or "")
    if not ext:
        return "ignored: organization without id"
    if _org_for(engine, ext) is not None:
        return "exists"
    orgs = Orgs(engine)
    base = _slugify(str(data.get("slug") or data.get("name") or "org"))
    slug = (
        base if SLUG_RE.match(base) and orgs.get_by_slug(base) is None else f"{base}-{secrets.token_hex(3)}"
    )
    org = orgs.create(slug, str(data.get("name") or slug)[:200])
    try:
        with engine.begin() as conn:
            conn.execute(insert(external_orgs).values(external_id=ext, org_id=org.id))
    except IntegrityError:  # a parallel delivery created it first: keep theirs
        with engine.begin() as conn:
            from controlplane.schema import organizations

            conn.execute(organizations.delete().where(organizations.c.id == org.id))
        return "exists"
    Projects(engine).ensure_default_project(org.id)
    creator = data.get("created_by")
    if isinstance(creator, str) and creator:
        user = _user_for(engine, creator)
        try:
            Memberships(engine).add(org.id, user.id, "admin", actor=ACTOR)
        except Conflict:
            pass
    return f"created org {org.slug}"


def _membership(engine: Engine, etype: str, data: Mapping[str, Any]) -> str:
    org_data = data.get("organization") or {}
    user_data = data.get("public_user_data") or {}
    ext_org = org_data.get("id") if isinstance(org_data, Mapping) else None
    ext_user = user_data.get("user_id") if isinstance(user_data, Mapping) else None
    if not isinstance(ext_org, str) or not isinstance(ext_user, str):
        return "ignored: membership without organization or user"
    org_id = _org_for(engine, ext_org)
    if org_id is None:
        if etype.endswith(".deleted") or not isinstance(org_data, Mapping):
            return "ignored: unknown organization"
        _create_org(engine, {**org_data, "created_by": None})
        org_id = _org_for(engine, ext_org)
        assert org_id is not None
    members = Memberships(engine)
    if etype.endswith(".deleted"):
        user = Users(engine).by_external_id(ext_user)
        if user is None:
            return "ignored: unknown user"
        try:
            members.remove(org_id, user.id, actor=ACTOR, allow_last_admin=True)
        except NotFound:
            return "absent"
        return "membership removed"
    email = user_data.get("identifier") if isinstance(user_data.get("identifier"), str) else None
    user = _user_for(engine, ext_user, email)
    role = _role(data.get("role"))
    if members.get(org_id, user.id) is None:
        try:
            members.add(org_id, user.id, role, actor=ACTOR)
            return f"membership added ({role})"
        except Conflict:
            pass
    try:
        members.set_role(org_id, user.id, role, actor=ACTOR)
    except Conflict as exc:  # the last admin demoted by the provider: keep admin, say so
        return f"kept: {exc}"
    return f"membership {role}"


def handle_identity_event(engine: Engine, event_id: str, event: Mapping[str, Any]) -> str:
    """Apply a verified identity-provider event once. Returns a short outcome."""
    etype = str(event.get("type") or "")
    data = event.get("data")
    if _seen(engine, event_id):
        return "duplicate"
    if not isinstance(data, Mapping):
        outcome = "ignored: no data"
    elif etype in ("user.created", "user.updated"):
        ext = str(data.get("id") or "")
        if not ext:
            outcome = "ignored: user without id"
        else:
            Users(engine).upsert_external(ext, _primary_email(data), _name(data))
            outcome = "user saved"
    elif etype == "user.deleted":
        user = Users(engine).by_external_id(str(data.get("id") or ""))
        if user is None:
            outcome = "ignored: unknown user"
        else:
            Users(engine).delete(user.id)
            outcome = "user deleted"
    elif etype == "organization.created":
        outcome = _create_org(engine, data)
    elif etype in (
        "organizationMembership.created",
        "organizationMembership.updated",
        "organizationMembership.deleted",
    ):
        try:
            outcome = _membership(engine, etype, data)
        except ControlPlaneError as exc:
            outcome = f"ignored: {exc}"
    else:
        outcome = "ignored: event type not handled"
    _record(engine, event_id, etype, outcome)
    return outcome
