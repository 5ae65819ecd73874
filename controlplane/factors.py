"""Published carbon factor versions (the factor set YAML, verbatim, immutable once published)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import Conflict, Invalid
from controlplane.models import FactorVersion
from controlplane.schema import carbon_factor_versions

# The built-in sets the control plane is seeded with (core/factors/*.yaml); the current one is the latest by
# published_at, i.e. v2.0. v1.0 stays published: closed months and signed receipts name it.
SEED_VERSIONS = ("v1.0", "v2.0")
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
        """Publish core's built-in sets (`core/factors/{v1.0,v2.0}.yaml`) that are not there yet; return the
        current one (v2.0, unless a later set was published)."""
        from core.methodology import FACTORS_DIR

        for version in SEED_VERSIONS:
            if self.get(version) is not None:
                continue
            text = (FACTORS_DIR / f"{version}.yaml").read_text(encoding="utf-8")
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
