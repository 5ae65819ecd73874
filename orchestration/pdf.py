"""The branded one-page receipt PDF (reportlab).

Deterministic: `invariant=1` fixes the document id and creation date reportlab would otherwise take from the
clock, and everything printed comes from the stored receipt, so the same receipt renders to the same bytes.
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
        (
            "Measured CO2e",
            f"{figures['co2_kg']:,.6f} kg (range {figures['co2_kg_low']:,.6f} – {figures['co2_kg_high']:,.6f} kg)",
        ),
        ("Basis", "retirement covers the upper bound of the period's estimate"),
        ("Credits retired", f"{sum(len(a['serials']) for a in allocations)} t CO2e"),
    ]
    for label, value in rows:
        c.setFont("Helvetica-Bold", 10)
        c.drawString(40, y, label)
        c.setFont("Helvetica", 10)
        c.drawString(170, y, value)
        y -= 18

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
