"""Public receipt verification: GET /public/receipts/verify/{serial_number} (no auth, no org data).

Returns the signed payload's fields, payload_hash (SHA-256 hex of the canonical JSON), signature (base64
Ed25519), public_key (base64), key_version, verification instructions and `verified` — this server's own
check against its receipt keyring; third parties should verify with the signature and public key. Rate
limit: `JOULESTREAM_PUBLIC_RATE_LIMIT` (60/minute) per client IP (429 with Retry-After beyond it): serial
numbers are sequential, so the limit is what stands between a stranger and a walk through every org's
retirements (docs/security.md). The client IP is the peer's, unless it is a trusted proxy
(`JOULESTREAM_FORWARDED_ALLOW_IPS`).
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from api.deps import Ctx
from api.errors import error_responses
from controlplane.billing import SERIAL_RE, Receipts
from core.ratelimit import PublicRateLimit
from core.receipts import Keyring, verify

router = APIRouter(prefix="/public/receipts", tags=["public"])
INSTRUCTIONS = (
    "To verify: 1) serialise the payload fields (serial_number, co2_retired_kg, credit_serial_numbers, "
    "period_start, period_end) as canonical JSON (RFC 8785: keys sorted, no whitespace, UTF-8); "
    "2) its SHA-256 (hex) must equal payload_hash; 3) verify the Ed25519 signature (base64) over those "
    "canonical JSON bytes with the public_key (base64, 32 bytes raw). In Python: "
    "nacl.signing.VerifyKey(b64decode(public_key)).verify(canonical, b64decode(signature))."
)


def _limiter(ctx) -> PublicRateLimit:
    lim = ctx.extras.get("public_rate_limiter")
    if lim is None:
        lim = ctx.extras.setdefault("public_rate_limiter", PublicRateLimit.from_settings(ctx.settings))
    return lim


@router.get(
    "/verify/{serial_number}",
    summary="Verify a carbon retirement receipt (public, no auth)",
    responses={
        **error_responses(404),
        429: {"description": "more than the public rate limit (60/minute) from this client"},
    },
)
def verify_receipt(serial_number: str, request: Request, ctx: Ctx) -> dict[str, Any]:
    limiter = _limiter(ctx)
    wait = limiter.check("public-verify", request.client.host if request.client else None)
    if wait is not None:
        raise HTTPException(
            429, f"rate limit: {limiter.description} per client", headers={"Retry-After": str(int(wait))}
        )
    r = Receipts(ctx.engine).by_serial(serial_number) if SERIAL_RE.match(serial_number) else None
    if r is None:
        raise HTTPException(404, f"No receipt found with serial number {serial_number[:40]}.")
    try:
        keyring = Keyring.load(ctx.settings, create=False)
        trusted = keyring.public_key(r.key_version)
    except (FileNotFoundError, ValueError):
        trusted = None
    verified = trusted is not None and verify(r.signed_record(), {r.key_version: trusted})
    public_key = base64.b64encode(bytes(trusted)).decode() if trusted is not None else r.public_key
    return {
        **{k: r.payload[k] for k in ("serial_number", "co2_retired_kg", "credit_serial_numbers")},
        "period_start": r.payload["period_start"],
        "period_end": r.payload["period_end"],
        "payload_hash": r.payload_hash,
        "signature": r.signature,
        "public_key": public_key,
        "key_version": r.key_version,
        "algorithm": "ed25519",
        "verification_instructions": INSTRUCTIONS,
        "verified": verified,
    }
