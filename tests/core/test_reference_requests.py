"""The reference requests of docs/methodology.md ("Reference requests, v2.0"), computed by the code.

The doc's table is this module's output: `python -m tests.core.test_reference_requests` prints it, and the
test below asserts the printed (rounded) figures, so the doc cannot drift from the code without a failing
test. Setting: OpenAI (served on Microsoft Azure, US; provider default region), factor set v2.0.
"""

from __future__ import annotations

from pathlib import Path

from core.methodology import Footprint, compute_footprint, load_factor_set

# (label, provider, model, region, uncached input, output)
REQUESTS = [
    ("(a) frontier chat, gpt-4o, 500 in / 300 out", "openai", "gpt-4o", None, 500, 300),
    ("(b) small model, gpt-4o-mini, 1,000 in / 1,000 out", "openai", "gpt-4o-mini", None, 1000, 1000),
    ("(c) reasoning, o3, 500 in / 5,000 out", "openai", "o3", None, 500, 5000),
    (
        "(a') as (a) on Anthropic via AWS us-east-1, claude-sonnet-4-5",
        "anthropic",
        "claude-sonnet-4-5",
        "us-east-1",
        500,
        300,
    ),
]


def footprints() -> list[tuple[str, Footprint]]:
    fs = load_factor_set("v2.0")
    return [
        (
            label,
            compute_footprint(
                fs,
                provider=provider,
                model=model,
                region=region,
                input_tokens_uncached=u,
                input_tokens_cached=0,
                input_tokens_cache_creation=0,
                output_tokens=o,
            ),
        )
        for label, provider, model, region, u, o in REQUESTS
    ]


def _g(x: float) -> str:
    return f"{x:.3g}"  # three significant figures


def _band(point: float, low: float, high: float, scale: float) -> str:
    return f"{_g(point * scale)} ({_g(low * scale)}–{_g(high * scale)})"


def rows() -> list[list[str]]:
    """One row per request: label, energy Wh, location g, market g, embodied g, water mL, cost USD (band)."""
    out = []
    for label, fp in footprints():
        assert fp.co2_kg_market is not None and fp.co2_kg_embodied is not None and fp.water_l is not None
        assert fp.co2_kg_market_low is not None and fp.co2_kg_market_high is not None
        assert fp.co2_kg_embodied_low is not None and fp.co2_kg_embodied_high is not None
        assert fp.water_l_low is not None and fp.water_l_high is not None and fp.cost_usd is not None
        out.append(
            [
                label,
                _band(fp.energy_j, fp.energy_j_low, fp.energy_j_high, 1 / 3600),
                _band(fp.co2_kg, fp.co2_kg_low, fp.co2_kg_high, 1000),
                _band(fp.co2_kg_market, fp.co2_kg_market_low, fp.co2_kg_market_high, 1000),
                _band(fp.co2_kg_embodied, fp.co2_kg_embodied_low, fp.co2_kg_embodied_high, 1000),
                _band(fp.water_l, fp.water_l_low, fp.water_l_high, 1000),
                f"{fp.cost_usd:.5f}".rstrip("0"),
            ]
        )
    return out


HEADER = [
    "request",
    "energy Wh",
    "CO2e location g",
    "CO2e market g",
    "CO2e embodied g",
    "water mL",
    "cost USD",
]

# What docs/methodology.md shows (pasted from `python -m tests.core.test_reference_requests`).
EXPECTED = [
    [
        "(a) frontier chat, gpt-4o, 500 in / 300 out",
        "0.377 (0.115–2.09)",
        "0.145 (0.0441–0.803)",
        "0.00501 (0.00153–0.0278)",
        "0.016 (0.00162–0.133)",
        "1.27 (0.386–7.02)",
        "0.00425",
    ],
    [
        "(b) small model, gpt-4o-mini, 1,000 in / 1,000 out",
        "0.115 (0.0361–0.41)",
        "0.0441 (0.0139–0.157)",
        "0.00153 (0.00048–0.00545)",
        "0.00486 (0.00051–0.026)",
        "0.386 (0.121–1.38)",
        "0.00075",
    ],
    [
        "(c) reasoning, o3, 500 in / 5,000 out",
        "6.64 (1.66–33.4)",
        "2.55 (0.636–12.8)",
        "0.0883 (0.022–0.444)",
        "0.281 (0.0234–2.12)",
        "22.3 (5.56–112)",
        "0.041",
    ],
    [
        "(a') as (a) on Anthropic via AWS us-east-1, claude-sonnet-4-5",
        "0.367 (0.112–2.04)",
        "0.141 (0.043–0.783)",
        "0.141 (0.043–0.783)",
        "0.016 (0.00162–0.133)",
        "1.19 (0.362–6.59)",
        "0.006",
    ],
]


def markdown() -> list[str]:
    return [
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *("| " + " | ".join(row) + " |" for row in rows()),
    ]


def test_reference_requests_match_the_doc() -> None:
    assert rows() == EXPECTED
    doc = (Path(__file__).resolve().parents[2] / "docs" / "methodology.md").read_text(encoding="utf-8")
    for line in markdown():
        assert line in doc, f"docs/methodology.md is missing the line {line!r}"


def test_reference_requests_by_hand() -> None:
    """(a) recomputed from the published literals: IT 500 × 0.5 + 300 × 3.0 = 1,150 J; PUE 1.18."""
    (_, a), *_ = footprints()
    assert abs(a.energy_j - 1357.0) < 1e-9
    assert abs(a.co2_kg_market - 1357.0 / 3.6e6 * 0.0133) < 1e-15  # type: ignore[operator]
    assert abs(a.co2_kg_embodied - 1150 * 1.389e-8) < 1e-15  # type: ignore[operator]
    assert abs(a.water_l - 1150 / 3.6e6 * (0.27 + 1.18 * 3.132)) < 1e-15  # type: ignore[operator]
    assert abs(a.cost_usd - 0.00425) < 1e-15  # type: ignore[operator]


if __name__ == "__main__":
    print("\n".join(markdown()))
