"""The demo tenant of `joulestream up`: a real control-plane org with projects and a fresh read key, so
the simulated traffic shows up in the API exactly as a customer's would."""

from __future__ import annotations

from datetime import timedelta

from controlplane import ApiKeys, Orgs, Projects, get_engine
from controlplane.signin_links import SignInLinks
from core.settings import Settings
from pipelines.simulate import Tenants

DEMO_SLUG = "demo"
DEMO_PROJECTS = ("chat-assistant", "batch-summaries")
DEMO_KEY_NAME = "joulestream-up-demo"


def ensure_demo_tenant(settings: Settings) -> tuple[Tenants, str]:
    """(tenants for the simulator, a new read+ingest key). Keys from earlier runs are revoked."""
    engine = get_engine(settings.database)
    orgs, projects, keys = Orgs(engine), Projects(engine), ApiKeys(engine)
    org = orgs.get_by_slug(DEMO_SLUG) or orgs.create(
        DEMO_SLUG, name="Demo (synthetic traffic)", plan_tier="growth"
    )
    existing = {p.name: p.id for p in projects.list(org.id)}
    ids = [projects.ensure_default_project(org.id).id]
    ids += [existing.get(name) or projects.create(org.id, name).id for name in DEMO_PROJECTS]
    for key in keys.list(org.id):
        if key.name == DEMO_KEY_NAME and key.revoked_at is None:
            keys.revoke(key.id, org.id)
    _, plaintext = keys.create(org.id, ["read", "ingest"], name=DEMO_KEY_NAME)
    return {org.id: ids}, plaintext


DEMO_SIGNIN_SCOPES = ("read", "admin", "billing")


def demo_signin_link(settings: Settings, org_id: str) -> str:
    """A one-time dashboard sign-in link token for the demo org (read, admin, billing; docs/dashboard.md)."""
    return SignInLinks(get_engine(settings.database)).create(
        org_id, DEMO_SIGNIN_SCOPES, timedelta(seconds=settings.dashboard_signin_link_s)
    )
