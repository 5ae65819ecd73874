"""Per-org price overrides: the repository's rules and the cached lookup, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from controlplane import Invalid, NotFound, Orgs
from controlplane.prices import PriceLookup, PriceOverrides

P = {"input": 2.0, "cached_input": 0.5, "cache_write": 2.5, "output": 8.0}


def test_put_list_get_delete_and_tenancy(engine):
    a, b = Orgs(engine).create("acme"), Orgs(engine).create("beta")
    repo = PriceOverrides(engine)
    o, created = repo.put(a.id, " GPT-4o* ", **P, note="negotiated")
    assert created and o.model_pattern == "gpt-4o*" and o.provider is None and o.output == 8.0
    again, created = repo.put(a.id, "gpt-4o*", **{**P, "output": 7.0})
    assert not created and again.id == o.id and again.output == 7.0 and again.note is None
    other, _ = repo.put(a.id, "gpt-4o*", provider="Azure", **P)
    assert other.id != o.id and other.provider == "azure"
    assert [x.id for x in repo.list(a.id)] == [o.id, other.id]  # any-provider ("") sorts first
    assert repo.list(b.id) == []
    assert repo.get(a.id, o.id) == again
    with pytest.raises(NotFound):
        repo.get(b.id, o.id)
    with pytest.raises(NotFound):
        repo.delete(b.id, o.id)
    repo.delete(a.id, o.id)
    with pytest.raises(NotFound):
        repo.delete(a.id, o.id)
    assert [x.id for x in repo.list(a.id)] == [other.id]
    with pytest.raises(NotFound):
        repo.put("no-such-org", "x", **P)


@pytest.mark.parametrize(
    "change",
    [
        {"model_pattern": ""},
        {"model_pattern": "gpt 4o"},
        {"model_pattern": "x" * 201},
        {"provider": "Open AI"},
        {"input": -1.0},
        {"output": float("nan")},
        {"cache_write": float("inf")},
        {"cached_input": 2e6},
        {"input": True},
        {"note": "n" * 501},
    ],
)
def test_bad_input_is_invalid(engine, change):
    org = Orgs(engine).create("acme")
    args = {"model_pattern": "gpt-4o*", **P, **change}
    with pytest.raises(Invalid):
        PriceOverrides(engine).put(org.id, **args)
    assert PriceOverrides(engine).list(org.id) == []


def test_lookup_precedence_normalisation_and_refresh(engine):
    a, b = Orgs(engine).create("acme"), Orgs(engine).create("beta")
    repo = PriceOverrides(engine)
    glob, _ = repo.put(a.id, "gpt-4o*", **P)
    longer, _ = repo.put(a.id, "gpt-4o-mini*", **{**P, "output": 1.0})
    exact, _ = repo.put(a.id, "gpt-4o-mini", **{**P, "output": 0.5})
    azure, _ = repo.put(a.id, "gpt-4o*", provider="azure", **{**P, "output": 3.0})
    lookup = PriceLookup(engine, ttl_s=3600)
    assert lookup.find(a.id, "openai", "gpt-4o-2024-08-06") == glob
    assert lookup.find(a.id, "openai", "gpt-4o-mini-2024-07-18") == longer
    assert lookup.find(a.id, "openai", "GPT-4o-mini") == exact
    assert lookup.find(a.id, "openai", "openai/gpt-4o-mini") == exact  # vendor prefix normalised away
    assert lookup.find(a.id, "Azure", "gpt-4o-mini") == azure  # provider-specific first
    assert lookup.find(a.id, "openai", "claude-sonnet-4") is None
    assert lookup.find(b.id, "openai", "gpt-4o") is None  # another org's overrides never apply
    # cached until refreshed
    repo.delete(a.id, exact.id)
    assert lookup.find(a.id, "openai", "gpt-4o-mini") == exact
    lookup.refresh()
    assert lookup.find(a.id, "openai", "gpt-4o-mini") == longer
    as_tuple = lookup.using(lambda o: (o.output, o.source))
    assert as_tuple(a.id, "openai", "gpt-4o-mini") == (1.0, f"org override {longer.id}: gpt-4o-mini*")
    assert as_tuple(a.id, "azure", "gpt-4o")[1] == f"org override {azure.id}: azure/gpt-4o*"
    assert as_tuple(b.id, "openai", "gpt-4o") is None
