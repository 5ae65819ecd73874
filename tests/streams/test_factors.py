"""A running enrich agent picks up a newly published factor version without a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from controlplane import FactorVersions, dispose_engine, get_engine, upgrade
from streams.factors import CurrentFactors

V1 = (Path(__file__).resolve().parents[2] / "core" / "factors" / "v1.0.yaml").read_text()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated control-plane database (the worker command migrates before the agents start)."""
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    eng = get_engine(url)
    upgrade(eng)
    yield eng
    dispose_engine(url)


def test_new_version_is_used_after_the_ttl(engine: Engine) -> None:
    current = CurrentFactors(engine, ttl_s=0)
    assert current().version == "v1.0"
    v11 = V1.replace("version: v1.0", "version: v1.1").replace(
        "published_at: 2026-11-22", "published_at: 2026-11-23"
    )
    FactorVersions(engine).publish(v11)
    assert current().version == "v1.1"


def test_cached_within_the_ttl(engine: Engine) -> None:
    current = CurrentFactors(engine, ttl_s=3600)
    assert current().version == "v1.0"
    v11 = V1.replace("version: v1.0", "version: v1.1").replace(
        "published_at: 2026-11-22", "published_at: 2026-11-23"
    )
    FactorVersions(engine).publish(v11)
    assert current().version == "v1.0"
