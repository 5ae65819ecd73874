"""The shared factor resolver: a running enrich agent picks up a newly published factor version without a
restart, published versions are found by name, and a gateway event is enriched with the version it names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from controlplane import FactorVersions, dispose_engine, get_engine, upgrade
from controlplane.factor_resolver import FACTORS_VERSION_LABEL, FactorResolver
from core.contracts import EnrichedUsage
from streams.factors import worker_factors
from streams.processing import Enricher
from tests.streams.test_processing import event, rec

V2 = (Path(__file__).resolve().parents[2] / "core" / "factors" / "v2.0.yaml").read_text()


def new_version(version: str = "v2.1", published_at: str = "2026-12-04", pue: float = 1.5) -> str:
    """v2.0 (the seeded current set) published again as `version`, with every provider's PUE set to `pue`
    (so its figures differ)."""
    text = V2.replace("version: v2.0", f"version: {version}").replace(
        "published_at: 2026-12-03", f"published_at: {published_at}"
    )
    head, rest = text.split("\npue:\n", 1)
    block, tail = rest.split("\ndefault_pue:", 1)
    return (
        head
        + "\npue:\n"
        + re.sub(r"(?m)^(  [a-z]+: +)1\.\d+", rf"\g<1>{pue}", block)
        + "\ndefault_pue:"
        + tail
    )


V21 = new_version()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated control-plane database (the worker command migrates before the agents start)."""
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    eng = get_engine(url)
    upgrade(eng)
    yield eng
    dispose_engine(url)


def test_new_version_is_used_after_the_ttl(engine: Engine) -> None:
    current = worker_factors(engine, ttl_s=0)
    assert current().version == "v2.0"
    FactorVersions(engine).publish(V21)
    assert current().version == "v2.1"


def test_cached_within_the_ttl(engine: Engine) -> None:
    current = worker_factors(engine, ttl_s=3600)
    assert current().version == "v2.0"
    FactorVersions(engine).publish(V21)
    assert current().version == "v2.0"
    assert current.refresh().version == "v2.1"  # an explicit refresh reads at once


def test_versions_by_name(engine: Engine) -> None:
    resolver = worker_factors(engine, ttl_s=3600)
    assert resolver.version("v2.1") is None
    FactorVersions(engine).publish(V21)
    assert resolver.version("v2.1") is None  # a miss is remembered for ttl_s
    resolver.ttl_s = 0
    v21 = resolver.version("v2.1")
    assert v21 is not None and v21.version == "v2.1" and resolver.version("v2.1") is v21
    assert resolver.version("v1.0") is not None and resolver.version("v9") is None


def test_unreadable_control_plane_keeps_the_built_in_set(tmp_path: Path) -> None:
    resolver = FactorResolver(get_engine(f"sqlite:///{tmp_path / 'empty.db'}"), ttl_s=0)  # no tables
    assert resolver.current().version == "v2.0" and resolver.version("v1.0") is not None


def test_gateway_event_is_enriched_with_the_version_it_names(engine: Engine) -> None:
    resolver = worker_factors(engine, ttl_s=0)
    FactorVersions(engine).publish(V21)
    enricher = Enricher(resolver, versions=resolver.version)
    stamped = event(labels={FACTORS_VERSION_LABEL: "v1.0"})
    unknown = event(event_id="ev-2", labels={FACTORS_VERSION_LABEL: "v7.7"})
    plain = event(event_id="ev-3")
    foreign = event(event_id="ev-4", source="poller", labels={FACTORS_VERSION_LABEL: "v1.0"})
    res = enricher.process([rec(e.model_dump_json().encode()) for e in (stamped, unknown, plain, foreign)])
    versions = [EnrichedUsage.model_validate_json(o.value).factors_version for o in res.out]
    # only the gateway's stamp is honoured; an unknown version falls back to the current set
    assert versions == ["v1.0", "v2.1", "v2.1", "v2.1"]
    outs = [EnrichedUsage.model_validate_json(o.value) for o in res.out]
    assert [o.pue for o in outs] == [1.18, 1.5, 1.5, 1.5]
    # the v1.0 receipt's event keeps v1.0's figures: no v2 figures; the v2.1 ones have them
    assert outs[0].co2_kg_market is None and outs[0].water_l is None and outs[0].cost_usd is None
    assert all(o.co2_kg_market is not None and o.water_l is not None for o in outs[1:])
