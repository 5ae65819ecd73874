"""Control-plane repositories: each takes an Engine, opens its own short transaction per call and returns
pydantic models (`controlplane.models`). Rule violations raise `NotFound` / `Conflict` / `Invalid`.

Tenancy: every method that reads or changes org data takes `org_id` and filters by it; an id of another
org is indistinguishable from an unknown id (`NotFound` / `None`).

API keys: the plaintext (`js_live_` + urlsafe base64 of 32 random bytes) is returned once by `create` and
never stored. The database holds its SHA-256 (hex). A fast unsalted hash is right here: the key carries
256 bits of randomness, so there is nothing to brute-force or look up in a table; slow password hashes
(bcrypt/argon2) only protect low-entropy secrets and would add ~100 ms to every API request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from controlplane.errors import Conflict, Invalid, NotFound
from controlplane.models import ApiKey, FactorVersion, Org, Project, Workload
from controlplane.schema import (
    PLAN_TIERS,
    SCOPES,
    WORKLOAD_KINDS,
    api_keys,
    carbon_factor_versions,
    organizations,
    projects,
    workloads,
)

DEFAULT_PROJECT_NAME = "Default"
KEY_PREFIX = "js_live_"
DISPLAY_PREFIX_LEN = len(KEY_PREFIX) + 4  # "js_live_ab12"
LAST_USED_RESOLUTION = timedelta(minutes=1)
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_KEY_RE = re.compile(r"^js_live_[A-Za-z0-9_-]{43}$")
_NAME_MAX = 100


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


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


def clean_project_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise Invalid("project name must not be blank")
    if len(cleaned) > _NAME_MAX:
        raise Invalid(f"project name is longer than {_NAME_MAX} characters")
    return cleaned


# --------------------------------------------------------------------------------------------- orgs


class Orgs:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        slug: str,
        name: str | None = None,
        plan_tier: str = "free",
        stripe_customer_id: str | None = None,
    ) -> Org:
        slug = slug.strip().lower()
        if not SLUG_RE.match(slug):
            raise Invalid(
                f"invalid org slug {slug!r}: use 1-64 of a-z, 0-9 and '-', not starting/ending with '-'"
            )
        if plan_tier not in PLAN_TIERS:
            raise Invalid(f"unknown plan {plan_tier!r}; plans: {', '.join(PLAN_TIERS)}")
        row = {
            "id": _new_id(),
            "slug": slug,
            "name": (name or slug).strip() or slug,
            "plan_tier": plan_tier,
            "stripe_customer_id": stripe_customer_id,
            "created_at": _now(),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(organizations).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"an organization with slug {slug!r} already exists") from exc
        return Org(**row)

    def get(self, org_id: str) -> Org | None:
        return self._one(organizations.c.id == org_id)

    def get_by_slug(self, slug: str) -> Org | None:
        return self._one(organizations.c.slug == slug.strip().lower())

    def list(self) -> list[Org]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(organizations).order_by(organizations.c.slug)).mappings().all()
        return [Org.model_validate(dict(r)) for r in rows]

    def set_plan(self, org_id: str, plan_tier: str) -> Org:
        if plan_tier not in PLAN_TIERS:
            raise Invalid(f"unknown plan {plan_tier!r}; plans: {', '.join(PLAN_TIERS)}")
        return self._update(org_id, plan_tier=plan_tier)

    def set_stripe_customer(self, org_id: str, stripe_customer_id: str | None) -> Org:
        return self._update(org_id, stripe_customer_id=stripe_customer_id)

    def _update(self, org_id: str, **values: object) -> Org:
        with self.engine.begin() as conn:
            n = conn.execute(
                update(organizations).where(organizations.c.id == org_id).values(**values)
            ).rowcount
        if not n:
            raise NotFound("organization not found")
        org = self.get(org_id)
        assert org is not None
        return org

    def _one(self, cond) -> Org | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(organizations).where(cond)).mappings().first()
        return Org.model_validate(dict(row)) if row else None


# --------------------------------------------------------------------------------------------- api keys


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
        operators (CLI); API callers always pass their org."""
        cond = api_keys.c.id == key_id
        if org_id is not None:
            cond = and_(cond, api_keys.c.org_id == org_id)
        with self.engine.begin() as conn:
            conn.execute(
                update(api_keys).where(cond, api_keys.c.revoked_at.is_(None)).values(revoked_at=now or _now())
            )
        key = self.get(key_id, org_id)
        if key is None:
            raise NotFound("API key not found")
        return key


# --------------------------------------------------------------------------------------------- projects

_live = projects.c.deleted_at.is_(None)
_workload_count = (
    select(func.count(workloads.c.id))
    .where(workloads.c.project_id == projects.c.id, workloads.c.is_active.is_(True))
    .correlate(projects)
    .scalar_subquery()
    .label("workload_count")
)


class Projects:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ensure_default_project(self, org_id: str) -> Project:
        """The org's Default project, created on first use (safe under concurrent callers)."""
        found = self._select_one(projects.c.org_id == org_id, projects.c.is_default.is_(True), _live)
        if found:
            return found
        row = {
            "id": _new_id(),
            "org_id": org_id,
            "name": DEFAULT_PROJECT_NAME,
            "is_default": True,
            "created_at": _now(),
            "deleted_at": None,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(projects).values(**row))
        except IntegrityError as exc:  # lost a race (or the org does not exist)
            found = self._select_one(projects.c.org_id == org_id, projects.c.is_default.is_(True), _live)
            if found:
                return found
            raise NotFound("organization not found") from exc
        return Project(**row)

    def create(self, org_id: str, name: str) -> Project:
        name = clean_project_name(name)
        self.ensure_default_project(org_id)  # "Default" is always taken by the default project
        row = {
            "id": _new_id(),
            "org_id": org_id,
            "name": name,
            "is_default": False,
            "created_at": _now(),
            "deleted_at": None,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(projects).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"a project named {name!r} already exists in this organization") from exc
        return Project(**row)

    def get(self, org_id: str, project_id: str) -> Project | None:
        """A live project of `org_id` (None for unknown, deleted, or another org's id)."""
        return self._select_one(projects.c.org_id == org_id, projects.c.id == project_id, _live)

    def list(self, org_id: str, *, offset: int = 0, limit: int | None = None) -> list[Project]:
        """Live projects, Default first, then by creation time."""
        stmt = (
            select(projects, _workload_count)
            .where(projects.c.org_id == org_id, _live)
            .order_by(projects.c.is_default.desc(), projects.c.created_at, projects.c.id)
            .offset(offset)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [Project.model_validate(dict(r)) for r in conn.execute(stmt).mappings().all()]

    def count(self, org_id: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(projects).where(projects.c.org_id == org_id, _live)
            ).scalar_one()

    def names(self, org_id: str, *, include_deleted: bool = True) -> dict[str, str]:
        """project id → name, including deleted projects (telemetry still points at them)."""
        cond = projects.c.org_id == org_id if include_deleted else and_(projects.c.org_id == org_id, _live)
        with self.engine.connect() as conn:
            return {r.id: r.name for r in conn.execute(select(projects.c.id, projects.c.name).where(cond))}

    def rename(self, org_id: str, project_id: str, name: str) -> Project:
        name = clean_project_name(name)
        current = self.get(org_id, project_id)
        if current is None:
            raise NotFound("project not found")
        if current.name == name:
            return current
        if current.is_default:
            raise Invalid("the Default project cannot be renamed")
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(projects)
                    .where(projects.c.id == project_id, projects.c.org_id == org_id, _live)
                    .values(name=name)
                )
        except IntegrityError as exc:
            raise Conflict(f"a project named {name!r} already exists in this organization") from exc
        updated = self.get(org_id, project_id)
        if updated is None:
            raise NotFound("project not found")
        return updated

    def delete(self, org_id: str, project_id: str, now: datetime | None = None) -> None:
        """Soft-delete a project. The Default project cannot be deleted; active workloads must be re-mapped
        first. Inactive workloads (history) keep pointing at the deleted project."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(projects.c.is_default).where(
                    projects.c.org_id == org_id, projects.c.id == project_id, _live
                )
            ).first()
            if row is None:
                raise NotFound("project not found")
            if row.is_default:
                raise Invalid("the Default project cannot be deleted")
            # The guarded UPDATE re-checks "no active workload" atomically with the delete.
            active = (
                select(workloads.c.id)
                .where(workloads.c.project_id == project_id, workloads.c.is_active.is_(True))
                .exists()
            )
            n = conn.execute(
                update(projects)
                .where(projects.c.id == project_id, projects.c.org_id == org_id, _live, ~active)
                .values(deleted_at=now or _now())
            ).rowcount
            if not n:
                raise Conflict("the project still has active workloads; re-map them to another project first")

    def _select_one(self, *conds) -> Project | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(projects, _workload_count).where(*conds)).mappings().first()
        return Project.model_validate(dict(row)) if row else None


# --------------------------------------------------------------------------------------------- workloads


class Workloads:
    """Where a usage source (a provider connection or a gateway API key) books its usage. A source has at
    most one active workload; re-mapping deactivates it and creates a new one, so history stays on the
    old workload (and its project) and only future events go to the new one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, org_id: str, project_id: str, kind: str, ref_id: str) -> Workload:
        self._check(org_id, project_id, kind)
        row = self._row(org_id, project_id, kind, ref_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(workloads).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"{kind} {ref_id!r} already has an active workload") from exc
        return Workload(**row)

    def ensure_active(self, org_id: str, kind: str, ref_id: str) -> Workload:
        """The active workload of a source, mapped to the Default project when it has none yet."""
        found = self.active(org_id, kind, ref_id)
        if found:
            return found
        default = Projects(self.engine).ensure_default_project(org_id)
        try:
            return self.create(org_id, default.id, kind, ref_id)
        except Conflict:
            found = self.active(org_id, kind, ref_id)
            if found is None:
                raise
            return found

    def get(self, org_id: str, workload_id: str) -> Workload | None:
        return self._one(workloads.c.org_id == org_id, workloads.c.id == workload_id)

    def active(self, org_id: str, kind: str, ref_id: str) -> Workload | None:
        return self._one(
            workloads.c.org_id == org_id,
            workloads.c.kind == kind,
            workloads.c.ref_id == ref_id,
            workloads.c.is_active.is_(True),
        )

    def list(
        self, org_id: str, project_id: str | None = None, *, active_only: bool = False
    ) -> list[Workload]:
        conds = [workloads.c.org_id == org_id]
        if project_id is not None:
            conds.append(workloads.c.project_id == project_id)
        if active_only:
            conds.append(workloads.c.is_active.is_(True))
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(workloads).where(*conds).order_by(workloads.c.created_at, workloads.c.id))
                .mappings()
                .all()
            )
        return [Workload.model_validate(dict(r)) for r in rows]

    def count_active_by_project(self, org_id: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(workloads.c.project_id, func.count())
                .where(workloads.c.org_id == org_id, workloads.c.is_active.is_(True))
                .group_by(workloads.c.project_id)
            ).all()
        return {pid: n for pid, n in rows}

    def remap(
        self, org_id: str, kind: str, ref_id: str, project_id: str, now: datetime | None = None
    ) -> Workload:
        """Point a source at `project_id`: deactivate its active workload (if any) and create a new one.
        A no-op returning the active workload when it already points there."""
        self._check(org_id, project_id, kind)
        now = now or _now()
        new = self._row(org_id, project_id, kind, ref_id, now)
        try:
            with self.engine.begin() as conn:
                current = (
                    conn.execute(
                        select(workloads).where(
                            workloads.c.org_id == org_id,
                            workloads.c.kind == kind,
                            workloads.c.ref_id == ref_id,
                            workloads.c.is_active.is_(True),
                        )
                    )
                    .mappings()
                    .first()
                )
                if current is not None and current["project_id"] == project_id:
                    return Workload.model_validate(dict(current))
                if current is not None:
                    conn.execute(
                        update(workloads)
                        .where(workloads.c.id == current["id"])
                        .values(is_active=False, deactivated_at=now)
                    )
                conn.execute(insert(workloads).values(**new))
        except IntegrityError as exc:
            raise Conflict(f"{kind} {ref_id!r} was re-mapped concurrently; retry") from exc
        return Workload(**new)

    def deactivate(self, org_id: str, kind: str, ref_id: str, now: datetime | None = None) -> Workload | None:
        """Deactivate the source's active workload (e.g. its connection was removed). None if it had none."""
        current = self.active(org_id, kind, ref_id)
        if current is None:
            return None
        now = now or _now()
        with self.engine.begin() as conn:
            conn.execute(
                update(workloads)
                .where(workloads.c.id == current.id, workloads.c.is_active.is_(True))
                .values(is_active=False, deactivated_at=now)
            )
        return current.model_copy(update={"is_active": False, "deactivated_at": now})

    def _check(self, org_id: str, project_id: str, kind: str) -> None:
        if kind not in WORKLOAD_KINDS:
            raise Invalid(f"unknown workload kind {kind!r}; kinds: {', '.join(WORKLOAD_KINDS)}")
        if Projects(self.engine).get(org_id, project_id) is None:
            raise NotFound("project not found")

    @staticmethod
    def _row(org_id: str, project_id: str, kind: str, ref_id: str, now: datetime | None = None) -> dict:
        return {
            "id": _new_id(),
            "org_id": org_id,
            "project_id": project_id,
            "kind": kind,
            "ref_id": ref_id,
            "is_active": True,
            "created_at": now or _now(),
            "deactivated_at": None,
        }

    def _one(self, *conds) -> Workload | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(workloads).where(*conds)).mappings().first()
        return Workload.model_validate(dict(row)) if row else None


# --------------------------------------------------------------------------------------------- factor versions

SEED_VERSION = "v1.0"
_fv_columns = [
    carbon_factor_versions.c.version,
    carbon_factor_versions.c.published_at,
    carbon_factor_versions.c.body,
    carbon_factor_versions.c.tier_count,
    carbon_factor_versions.c.created_at,
]
_fv_newest_first = (
    carbon_factor_versions.c.published_at.desc(),
    carbon_factor_versions.c.created_at.desc(),
    carbon_factor_versions.c.id.desc(),
)


class FactorVersions:
    """Published carbon factor sets. A version is immutable once published; the current one is the
    latest by `published_at` (ties: the later publication)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ensure_seeded(self) -> FactorVersion:
        """Publish core's built-in v1.0 (`core/factors/v1.0.yaml`) unless it is already there; return current."""
        if self.get(SEED_VERSION) is None:
            from core.methodology import FACTORS_DIR

            text = (FACTORS_DIR / f"{SEED_VERSION}.yaml").read_text(encoding="utf-8")
            try:
                self.publish(text)
            except Conflict:  # seeded concurrently
                pass
        current = self.current()
        assert current is not None
        return current

    def publish(self, yaml_text: str) -> FactorVersion:
        """Validate a factor set YAML (`core.methodology.parse_factor_set`) and store it as a new version."""
        from core.methodology import parse_factor_set

        try:
            fs = parse_factor_set(yaml_text)
        except ValueError as exc:  # FactorSetError
            raise Invalid(str(exc)) from exc
        published = fs.published_at
        if not isinstance(published, datetime):
            published = datetime(published.year, published.month, published.day, tzinfo=UTC)
        elif published.tzinfo is None:
            published = published.replace(tzinfo=UTC)
        row = {
            "id": _new_id(),
            "version": fs.version,
            "published_at": published.astimezone(UTC),
            "body": yaml_text,
            "tier_count": len(fs.tiers),
            "created_at": _now(),
        }
        if self.get(fs.version) is not None:
            raise Conflict(f"factor version {fs.version} is already published; a new set needs a new version")
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(carbon_factor_versions).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"factor version {fs.version} is already published") from exc
        row.pop("id")
        return FactorVersion(**row)

    def current(self) -> FactorVersion | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_fv_columns).order_by(*_fv_newest_first).limit(1)).mappings().first()
        return FactorVersion.model_validate(dict(row)) if row else None

    def get(self, version: str) -> FactorVersion | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(*_fv_columns).where(carbon_factor_versions.c.version == version))
                .mappings()
                .first()
            )
        return FactorVersion.model_validate(dict(row)) if row else None

    def list(self) -> list[FactorVersion]:
        """Every version, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_fv_columns).order_by(*_fv_newest_first)).mappings().all()
        return [FactorVersion.model_validate(dict(r)) for r in rows]
