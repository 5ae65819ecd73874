"""Control-plane commands: `joulestream keys …`, `joulestream factors …`, `joulestream orgs …`.

Mounted by cli/main.py (`app.add_typer(keys_app, name="keys")`, …). They act on `JOULESTREAM_DATABASE`
(default: SQLite under `JOULESTREAM_HOME`) and migrate it first (idempotent).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from controlplane import (
    PLAN_TIERS,
    ApiKeys,
    ControlPlaneError,
    FactorVersions,
    Orgs,
    get_engine,
    upgrade,
)
from core.settings import load_settings

keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
factors_app = typer.Typer(
    help="Carbon factor versions: publish a YAML factor set, list versions.", no_args_is_help=True
)
orgs_app = typer.Typer(help="Organizations: create, list.", no_args_is_help=True)


def _engine():
    engine = get_engine(load_settings().database)
    upgrade(engine)
    return engine


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _org_id(engine, slug: str) -> str:
    org = Orgs(engine).get_by_slug(slug)
    if org is None:
        raise _fail(f"no organization {slug!r} (create it with: joulestream orgs create {slug})")
    return org.id


def _ts(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if dt else "-"


# --------------------------------------------------------------------------------------------- keys


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Option("--org", help="Organization slug")],
    scopes: Annotated[
        str, typer.Option("--scopes", help="Comma-separated: read,ingest,admin,billing")
    ] = "read",
    name: Annotated[str | None, typer.Option("--name", help="A label for the key")] = None,
    expires_days: Annotated[
        int | None, typer.Option("--expires-days", min=1, help="Expire after N days")
    ] = None,
) -> None:
    """Create an API key. The key is printed once and cannot be shown again."""
    engine = _engine()
    expires_at = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    try:
        key, plaintext = ApiKeys(engine).create(
            _org_id(engine, org), scopes, name=name, expires_at=expires_at
        )
    except ControlPlaneError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(plaintext)
    typer.echo(
        f"id={key.id} prefix={key.prefix} scopes={','.join(key.scopes)} expires={_ts(key.expires_at)}\n"
        "Store the key now: it is not shown again.",
        err=True,
    )


@keys_app.command("list")
def keys_list(
    org: Annotated[str, typer.Option("--org", help="Organization slug")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """List an organization's API keys (never the keys themselves)."""
    engine = _engine()
    keys = ApiKeys(engine).list(_org_id(engine, org))
    if as_json:
        typer.echo(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
        return
    now = datetime.now(UTC)
    for k in keys:
        state = "revoked" if k.revoked_at else "expired" if not k.is_usable(now) else "active"
        typer.echo(
            f"{k.id}  {k.prefix}…  {','.join(k.scopes):<24} {state:<8} created={_ts(k.created_at)} "
            f"expires={_ts(k.expires_at)} last_used={_ts(k.last_used_at)}  {k.name}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id (from `keys list`)")]) -> None:
    """Revoke an API key; it stops working at once."""
    try:
        key = ApiKeys(_engine()).revoke(key_id)
    except ControlPlaneError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"revoked {key.id} ({key.prefix}…) at {_ts(key.revoked_at)}")


# --------------------------------------------------------------------------------------------- factors


@factors_app.command("publish")
def factors_publish(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Factor set YAML")],
) -> None:
    """Validate a factor set YAML and publish it as a new version (versions are immutable)."""
    try:
        fv = FactorVersions(_engine()).publish(file.read_text(encoding="utf-8"))
    except ControlPlaneError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"published {fv.version} ({fv.tier_count} tiers, published_at {fv.published_at.date()})")


@factors_app.command("list")
def factors_list() -> None:
    """List published factor versions, newest (current) first."""
    repo = FactorVersions(_engine())
    repo.ensure_seeded()
    for i, fv in enumerate(repo.list()):
        marker = "*" if i == 0 else " "
        typer.echo(f"{marker} {fv.version:<10} published={fv.published_at.date()} tiers={fv.tier_count}")


# --------------------------------------------------------------------------------------------- orgs


@orgs_app.command("create")
def orgs_create(
    slug: Annotated[str, typer.Argument(help="URL-safe identifier: a-z, 0-9, '-'")],
    name: Annotated[str | None, typer.Option("--name", help="Display name (default: the slug)")] = None,
    plan: Annotated[str, typer.Option("--plan", help=f"One of: {', '.join(PLAN_TIERS)}")] = "free",
) -> None:
    """Create an organization."""
    try:
        org = Orgs(_engine()).create(slug, name=name, plan_tier=plan)
    except ControlPlaneError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"created org {org.slug} id={org.id} plan={org.plan_tier}")


@orgs_app.command("list")
def orgs_list() -> None:
    """List organizations."""
    for org in Orgs(_engine()).list():
        typer.echo(f"{org.id}  {org.slug:<24} {org.plan_tier:<10} {org.name}")


# --------------------------------------------------------------------------------------------- users

users_app = typer.Typer(help="Users (first-party login): create.", no_args_is_help=True)


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="The user's email (their login)")],
    org: Annotated[
        str | None, typer.Option("--org", help="Make them a member of this org (created if missing)")
    ] = None,
    role: Annotated[str, typer.Option("--role", help="admin, member or viewer")] = "admin",
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="JOULESTREAM_NEW_USER_PASSWORD",
            help="At least 10 characters; prompted (hidden) when not given",
        ),
    ] = None,
) -> None:
    """Create a user who signs in with email and password (POST /api/v1/auth/login): the first admin of a
    self-hosted deployment without an identity provider."""
    from controlplane import Projects
    from controlplane.users import Memberships, Users

    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    engine = _engine()
    try:
        user = Users(engine).create(email, password)
        if org:
            o = Orgs(engine).get_by_slug(org) or Orgs(engine).create(org)
            Projects(engine).ensure_default_project(o.id)
            Memberships(engine).add(o.id, user.id, role, actor="cli")
    except ControlPlaneError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"created user {user.email} id={user.id}" + (f" ({role} of {org})" if org else ""))
