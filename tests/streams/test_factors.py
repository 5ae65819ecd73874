"""A running enrich agent picks up a newly published factor version without a restart."""

from __future__ import annotations

from pathlib import Path

from controlplane import FactorVersions, get_engine
from streams.factors import CurrentFactors

V1 = (Path(__file__).resolve().parents[2] / "core" / "factors" / "v1.0.yaml").read_text()


def test_new_version_is_used_after_the_ttl(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    current = CurrentFactors(engine, ttl_s=0)
    assert current().version == "v1.0"
    v11 = V1.replace("version: v1.0", "version: v1.1").replace(
        "published_at: 2026-11-22", "published_at: 2026-11-23"
    )
    FactorVersions(engine).publish(v11)
    assert current().version == "v1.1"


def test_cached_within_the_ttl(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    current = CurrentFactors(engine, ttl_s=3600)
    assert current().version == "v1.0"
    v11 = V1.replace("version: v1.0", "version: v1.1").replace(
        "published_at: 2026-11-22", "published_at: 2026-11-23"
    )
    FactorVersions(engine).publish(v11)
    assert current().version == "v1.0"
