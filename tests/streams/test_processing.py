"""The enrich stage as a pure batch function: validation → DLQ reasons, dedup window, enrichment."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson

from core.contracts import DeadLetter, EnrichedUsage, UsageEvent
from core.methodology import load_factor_set
from streams.processing import DedupWindow, Enricher, InRecord, parse_enriched

NOW = datetime.now(UTC).replace(microsecond=0)


def event(**kw: object) -> UsageEvent:
    base = dict(
        event_id="ev-1",
        source="gateway",
        org_id="org-a",
        project_id="p1",
        workload_id="w1",
        provider="openai",
        model="gpt-4o",
        bucket_start=NOW - timedelta(hours=1),
        bucket_end=NOW - timedelta(hours=1),
        event_timestamp=NOW - timedelta(hours=1),
        input_tokens_uncached=1000,
        output_tokens=200,
    )
    base.update(kw)
    return UsageEvent(**base)  # type: ignore[arg-type]


def rec(value: bytes | None, key: bytes | None = b"k", offset: int = 0) -> InRecord:
    return InRecord(key, value, "usage.raw.v1", 0, offset)


def enricher() -> Enricher:
    fs = load_factor_set("v1.0")
    return Enricher(lambda: fs)


def test_valid_event_is_enriched_with_its_factors() -> None:
    res = enricher().process([rec(event().model_dump_json().encode())])
    assert not res.dlq and len(res.out) == 1
    out = EnrichedUsage.model_validate_json(res.out[0].value)
    assert res.out[0].key == b"ev-1"
    assert out.factors_version == "v1.0" and out.model_tier == "large"
    assert out.energy_j_low <= out.energy_j <= out.energy_j_high and out.co2_kg > 0
    assert out.input_tokens_uncached == 1000 and out.pue >= 1


def dlq_of(value: bytes | None) -> DeadLetter:
    res = enricher().process([rec(value, offset=42)])
    assert not res.out and len(res.dlq) == 1
    return DeadLetter.model_validate_json(res.dlq[0].value)


def test_invalid_inputs_go_to_the_dlq_with_stage_reason_and_original_bytes() -> None:
    good = orjson.loads(event().model_dump_json())
    cases = {
        b"{nope": ("decode", "invalid JSON"),
        orjson.dumps({**good, "output_tokens": -1}): ("validate", "output_tokens"),
        orjson.dumps({**good, "bucket_end": "2020-01-01T00:00:00Z"}): ("validate", "bucket_end is before"),
        orjson.dumps({**good, "event_timestamp": "1990-01-01T00:00:00Z"}): (
            "validate",
            "event_timestamp: Input should be greater than or equal to 2015",
        ),
        orjson.dumps({**good, "event_timestamp": (NOW + timedelta(days=30)).isoformat()}): (
            "validate",
            "future",
        ),
        orjson.dumps({k: v for k, v in good.items() if k != "model"}): ("validate", "model: Field required"),
        orjson.dumps({**good, "surprise": 1}): ("validate", "surprise"),
        orjson.dumps([1, 2]): ("validate", "should be an object"),
    }
    for value, (stage, fragment) in cases.items():
        d = dlq_of(value)
        assert d.stage == stage, (value, d)
        assert fragment in d.error, (value, d.error)
        assert base64.b64decode(d.original_b64) == value
        assert (d.partition, d.offset, d.original_key) == (0, 42, "k")
    assert dlq_of(None).stage == "decode"


def test_dedup_window_keeps_the_highest_revision() -> None:
    e = enricher()
    r0 = event().model_dump_json().encode()
    r1 = event(revision=1, output_tokens=300).model_dump_json().encode()
    res = e.process([rec(r0), rec(r0), rec(r1), rec(r0)])
    assert res.duplicates == 2  # the exact re-send and the stale revision 0 after revision 1
    assert [EnrichedUsage.model_validate_json(o.value).revision for o in res.out] == [0, 1]
    res = e.process([rec(r1)])  # across batches too
    assert res.duplicates == 1 and not res.out


def test_dedup_window_is_bounded() -> None:
    w = DedupWindow(capacity=3)
    for i in range(5):
        assert w.admit(f"e{i}", 0)
    assert len(w) == 3
    assert w.admit("e0", 0)  # evicted, so admitted again: the warehouse ledger catches this one


def test_new_factor_version_applies_from_the_next_batch() -> None:
    fs = load_factor_set("v1.0")
    current = {"fs": fs}
    e = Enricher(lambda: current["fs"])
    first = EnrichedUsage.model_validate_json(
        e.process([rec(event().model_dump_json().encode())]).out[0].value
    )
    current["fs"] = fs.model_copy(update={"version": "v1.1-test"})
    second = EnrichedUsage.model_validate_json(
        e.process([rec(event(event_id="ev-2").model_dump_json().encode())]).out[0].value
    )
    assert (first.factors_version, second.factors_version) == ("v1.0", "v1.1-test")


def test_sink_parser_sends_foreign_bytes_to_the_dlq() -> None:
    enriched = enricher().process([rec(event().model_dump_json().encode())]).out[0].value
    good, bad = parse_enriched([rec(enriched), rec(b"garbage"), rec(event().model_dump_json().encode())])
    assert len(good) == 1 and len(bad) == 2
    assert all(DeadLetter.model_validate_json(b.value).stage == "sink" for b in bad)


def test_fast_json_is_byte_identical_to_pydantic() -> None:
    from pipelines.simulate import generate
    from streams.processing import to_json

    fs = load_factor_set()
    traffic = generate(300, duplicate_rate=0, revision_rate=0, invalid_rate=0, seed=5)
    e = Enricher(lambda: fs)
    for m in traffic.messages:
        ev = UsageEvent.model_validate_json(m.value)
        assert to_json(ev) == ev.model_dump_json().encode()
        out = e.process([rec(m.value)]).out[0].value
        assert out == EnrichedUsage.model_validate_json(out).model_dump_json().encode()


def test_org_price_override_and_price_book() -> None:
    """An org with an override is priced at it; the others at the v2.0 price book (gpt-4o 2.50 / 10.00)."""
    from core.methodology import Prices

    asked: list[tuple[str, str, str]] = []

    def prices(org_id: str, provider: str, model: str) -> Prices | None:
        asked.append((org_id, provider, model))
        return Prices(1.0, 0.1, 1.25, 4.0, "org override org-a") if org_id == "org-a" else None

    fs = load_factor_set("v2.0")
    res = Enricher(lambda: fs, prices=prices).process(
        [
            rec(event().model_dump_json().encode()),
            rec(event(event_id="ev-2", org_id="org-b").model_dump_json().encode()),
        ]
    )
    a, b = (EnrichedUsage.model_validate_json(o.value) for o in res.out)
    assert asked == [("org-a", "openai", "gpt-4o"), ("org-b", "openai", "gpt-4o")]
    assert a.price_source == "org override org-a" and a.cost_usd == (1000 * 1.0 + 200 * 4.0) / 1e6
    assert b.price_source is not None and b.price_source.startswith("price book pb-2026-12-03")
    assert b.cost_usd == (1000 * 2.5 + 200 * 10.0) / 1e6
    # without a lookup the book prices everyone
    plain = EnrichedUsage.model_validate_json(
        Enricher(lambda: fs).process([rec(event().model_dump_json().encode())]).out[0].value
    )
    assert plain.cost_usd == b.cost_usd
