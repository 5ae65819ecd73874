"""The branded one-page receipt PDF (reportlab).

Deterministic: `invariant=1` fixes the document id and creation date reportlab would otherwise take from the
clock, and everything printed comes from the stored receipt, so the same receipt renders to the same bytes.

Every figure says what it is: the token-based CO2e is an *estimate* (with its range); once metered energy
exists, the measured and estimated parts are shown apart. Beside the location-based Scope 2 figure come
market-based Scope 2, Scope 3 embodied CO2e and water when the period's events carry them (methodology v2),
with how many events a partial figure covers, and the factor sets behind them. Figures frozen before v2 have
none of those keys and print as before, minus the wrong "Measured" label.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from reportlab.lib.colors import HexColor
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen.canvas import Canvas

BRAND = HexColor("#0f766e")
INK = HexColor("#111827")
MUTED = HexColor("#6b7280")
MAX_SERIAL_LINES = 14


def _serial_lines(allocations: Sequence[dict[str, Any]]) -> list[str]:
    """One line per allocation (a run of consecutive serials), shortened to fit the page."""
    lines = []
    for a in allocations:
        serials = a["serials"]
        run = serials[0] if len(serials) == 1 else f"{serials[0]} … {serials[-1]}"
        lines.append(f"{run}  ({len(serials)} t, {a['registry']}, {a['project']}, vintage {a['vintage']})")
    if len(lines) > MAX_SERIAL_LINES:
        extra = len(lines) - MAX_SERIAL_LINES + 1
        lines = [*lines[: MAX_SERIAL_LINES - 1], f"… and {extra} more blocks (full list in the audit pack)"]
    return lines


def _wrap(text: str, width: int) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def _range(point: float, low: float, high: float, unit: str = "kg") -> str:
    return f"{point:,.6f} {unit} (range {low:,.6f} – {high:,.6f} {unit})"


def _covers(figures: dict[str, Any], coverage_key: str) -> str:
    """ ", covers N of M events" when a v2 figure covers only part of the period's events."""
    covered = (figures.get("coverage") or {}).get(coverage_key)
    events = (figures.get("totals") or {}).get("events")
    if covered is None or events is None or covered == events:
        return ""
    return f", covers {covered:,} of {events:,} events"


def figure_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of the period's figures: estimates called estimates, the measured part apart."""
    rows: list[tuple[str, str]] = []
    measured = figures.get("measured") or {}
    if measured.get("events"):
        est = figures["estimated"]
        rows += [
            (
                "CO2e, location-based",
                _range(figures["co2_kg"], figures["co2_kg_low"], figures["co2_kg_high"]),
            ),
            (
                "  of which measured",
                _range(measured["co2_kg"], measured["co2_kg_low"], measured["co2_kg_high"])
                + f", {measured['events']:,} events with metered energy",
            ),
            (
                "  of which estimated",
                _range(est["co2_kg"], est["co2_kg_low"], est["co2_kg_high"])
                + f", {est['events']:,} events estimated from tokens",
            ),
        ]
    else:
        rows.append(
            (
                "Estimated CO2e",
                _range(figures["co2_kg"], figures["co2_kg_low"], figures["co2_kg_high"])
                + ", location-based, from tokens",
            )
        )
    for label, key, unit, coverage in (
        ("Scope 2 market-based", "co2_kg_market", "kg", "events_market"),
        ("Scope 3 embodied", "co2_kg_embodied", "kg", "events_embodied"),
        ("Water", "water_l", "L", "events_water"),
    ):
        if key not in figures:  # figures frozen before methodology v2
            continue
        if figures[key] is None:
            rows.append((label, "not available: no event of the period carries it (factor set before v2.0)"))
        else:
            point, low, high = figures[key], figures[f"{key}_low"], figures[f"{key}_high"]
            rows.append((label, "estimated " + _range(point, low, high, unit) + _covers(figures, coverage)))
    totals = figures.get("totals") or {}
    if "energy_j" in totals:
        kwh = totals["energy_j"] / 3.6e6
        part = (
            f", of which {measured['energy_j'] / 3.6e6:,.6f} kWh measured" if measured.get("events") else ""
        )
        rows.append(("Energy", f"{kwh:,.6f} kWh{part or ' (estimated from tokens)'}"))
    if figures.get("factors_versions"):
        rows.append(("Factor set", ", ".join(figures["factors_versions"])))
    return rows


def render_receipt_pdf(
    *,
    payload: dict[str, Any],
    payload_hash: str,
    signature: str,
    key_version: str,
    public_key: str,
    org_name: str,
    issued_on: str,
    verify_url: str,
    allocations: Sequence[dict[str, Any]],
    figures: dict[str, Any],
) -> bytes:
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4, invariant=1, pageCompression=1)
    c.setTitle(f"Carbon retirement receipt {payload['serial_number']}")
    c.setAuthor("joulestream")
    c.setSubject("Carbon credit retirement receipt")
    w, h = A4

    c.setFillColor(BRAND)
    c.rect(0, h - 90, w, 90, stroke=0, fill=1)
    c.setFillColor(HexColor("#ffffff"))
    c.setFont("Helvetica-Bold", 24)
    c.drawString(40, h - 52, "joulestream")
    c.setFont("Helvetica", 11)
    c.drawString(40, h - 72, "Energy and carbon accounting for AI inference")
    c.setFont("Helvetica-Bold", 13)
    c.drawRightString(w - 40, h - 52, "Carbon retirement receipt")
    c.setFont("Helvetica", 11)
    c.drawRightString(w - 40, h - 72, payload["serial_number"])

    y = h - 130
    c.setFillColor(INK)
    rows = [
        ("Organization", org_name),
        ("Period", f"{payload['period_start']} to {payload['period_end']}"),
        ("Issued", issued_on),
        ("CO2e retired", f"{payload['co2_retired_kg']:,.6f} kg"),
        *figure_rows(figures),
        ("Basis", "retirement covers the upper bound of the location-based CO2e"),
        ("Credits retired", f"{sum(len(a['serials']) for a in allocations)} t CO2e"),
    ]
    for label, value in rows:
        c.setFont("Helvetica-Bold", 10)
        c.drawString(40, y, label)
        c.setFont("Helvetica", 9.5 if len(value) > 70 else 10)
        c.drawString(190, y, value)
        y -= 17

    y -= 8
    c.setFont("Helvetica-Bold", 11)
    c.drawString(40, y, "Credit serial numbers")
    y -= 16
    c.setFont("Courier", 8)
    for line in _serial_lines(allocations):
        c.drawString(40, y, line[:110])
        y -= 11

    y -= 12
    c.setFont("Helvetica-Bold", 11)
    c.drawString(40, y, "Signature (Ed25519)")
    y -= 16
    c.setFont("Courier", 7.5)
    for label, value in (
        ("payload SHA-256", payload_hash),
        ("key version", key_version),
        ("public key (b64)", public_key),
        ("signature (b64)", signature),
    ):
        for i, part in enumerate(_wrap(value, 88)):
            c.drawString(40, y, f"{label if i == 0 else '':<17}{part}")
            y -= 10

    y -= 12
    c.setFillColor(MUTED)
    c.setFont("Helvetica", 8.5)
    notes = [
        "Verify: canonical JSON (RFC 8785) of the payload fields serial_number, co2_retired_kg,",
        "credit_serial_numbers, period_start, period_end; its SHA-256 is the payload hash above, and the",
        "Ed25519 signature is over those canonical bytes under the public key above.",
        f"Online: {verify_url}",
    ]
    for line in notes:
        c.drawString(40, y, line)
        y -= 12
    c.drawString(40, 40, "joulestream monthly close — methodology and factors are listed in the audit pack.")
    c.showPage()
    c.save()
    return buf.getvalue()
