"""cli/controlplane.py typer apps through typer's CliRunner, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from cli.controlplane import factors_app, keys_app, orgs_app
from controlplane import ApiKeys, FactorVersions, Orgs
from tests.fixtures_controlplane import tiny_factors

runner = CliRunner()


def _root() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(orgs_app, name="orgs")
    app.add_typer(keys_app, name="keys")
    app.add_typer(factors_app, name="factors")
    return app


def _run(db_url, tmp_path, *args):
    env = {"JOULESTREAM_DATABASE": db_url, "JOULESTREAM_HOME": str(tmp_path / "home")}
    return runner.invoke(_root(), list(args), env=env)


def test_orgs_and_keys(db_url, engine, tmp_path):
    r = _run(db_url, tmp_path, "orgs", "create", "acme", "--name", "Acme Inc", "--plan", "starter")
    assert r.exit_code == 0, r.output
    assert "created org acme" in r.stdout
    org = Orgs(engine).get_by_slug("acme")
    assert org.name == "Acme Inc" and org.plan_tier == "starter"
    assert _run(db_url, tmp_path, "orgs", "create", "acme").exit_code == 1
    assert _run(db_url, tmp_path, "orgs", "create", "x", "--plan", "gold").exit_code == 1
    assert "acme" in _run(db_url, tmp_path, "orgs", "list").stdout

    r = _run(db_url, tmp_path, "keys", "create", "--org", "acme", "--scopes", "read,admin", "--name", "ci",
             "--expires-days", "30")  # fmt: skip
    assert r.exit_code == 0, r.output
    plaintext = r.stdout.strip()
    assert plaintext.startswith("js_live_") and "\n" not in plaintext  # stdout carries only the key
    key = ApiKeys(engine).authenticate(plaintext)
    assert key is not None and key.scopes == ("read", "admin") and key.name == "ci" and key.expires_at
    assert "not shown again" in r.stderr

    listed = _run(db_url, tmp_path, "keys", "list", "--org", "acme")
    assert listed.exit_code == 0 and key.prefix in listed.stdout and plaintext not in listed.stdout
    as_json = json.loads(_run(db_url, tmp_path, "keys", "list", "--org", "acme", "--json").stdout)
    assert [k["id"] for k in as_json] == [key.id] and "key_hash" not in as_json[0]

    r = _run(db_url, tmp_path, "keys", "revoke", key.id)
    assert r.exit_code == 0 and "revoked" in r.stdout
    assert ApiKeys(engine).authenticate(plaintext) is None
    assert "revoked" in _run(db_url, tmp_path, "keys", "list", "--org", "acme").stdout

    assert _run(db_url, tmp_path, "keys", "revoke", "no-such-id").exit_code == 1
    assert _run(db_url, tmp_path, "keys", "create", "--org", "nope").exit_code == 1
    assert _run(db_url, tmp_path, "keys", "create", "--org", "acme", "--scopes", "root").exit_code == 1


def test_factors(db_url, engine, tmp_path):
    r = _run(db_url, tmp_path, "factors", "list")
    assert r.exit_code == 0 and "v1.0" in r.stdout  # seeded
    f = tmp_path / "v9.0.yaml"
    f.write_text(tiny_factors("v9.0", "2030-01-01"))
    r = _run(db_url, tmp_path, "factors", "publish", str(f))
    assert r.exit_code == 0, r.output
    assert "published v9.0 (2 tiers" in r.stdout
    assert FactorVersions(engine).current().version == "v9.0"
    assert _run(db_url, tmp_path, "factors", "publish", str(f)).exit_code == 1  # duplicate
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_factors("v9.1").replace("default: 0.37", "default: 370"))
    r = _run(db_url, tmp_path, "factors", "publish", str(bad))
    assert r.exit_code == 1 and "kg CO2e/kWh" in r.stderr
    lines = _run(db_url, tmp_path, "factors", "list").stdout.splitlines()
    assert lines[0].startswith("* v9.0") and "v2.0" in lines[1] and "v1.0" in lines[2]  # both seeded
    assert _run(db_url, tmp_path, "factors", "publish", str(tmp_path / "missing.yaml")).exit_code != 0
