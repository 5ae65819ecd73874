"""Organizations (tenants): create, look up, plan tier and Stripe customer.

Like every control-plane repository, `Orgs` takes an Engine, opens a short transaction per call, returns
pydantic models (`controlplane.models`) and raises `NotFound` / `Conflict` / `Invalid` on rule violations.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.errors import Conflict, Invalid, NotFound
from controlplane.models import Org
from controlplane.schema import PLAN_TIERS, organizations

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


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
