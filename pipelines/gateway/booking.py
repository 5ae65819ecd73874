"""Booking a served request: its footprint, energy headers, usage event, signed receipt and settlement.

A request computes its figures with the factor set it took at its start (`RequestCtx.factors`) and stamps
that set's version on its usage event (label `FACTORS_VERSION_LABEL`); enrichment applies the stamped
version, so the ledger row of the event equals the signed receipt even across `joulestream factors publish`.

`cost_usd` (receipt `cost_usd_micros`, header `X-Cost-USD`) is what enrichment records too: the tokens at the org's price override
(`controlplane.prices`, as the gateway last read it) or the factor set's price book. It is not what the
gateway charges a prepaid balance (`price_usd_micros`: the routing file's prices for the upstream that
answered, rounded up to whole micro-USD).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controlplane.factor_resolver import FACTORS_VERSION_LABEL
from core.contracts import (
    FAILED_ATTEMPTS_LABEL,
    MODALITY_FIELDS,
    ROUTING_LABEL,
    RoutingTier,
    Source,
    UsageEvent,
)
from core.methodology import J_PER_KWH, Extra, FactorSet, Footprint, Prices, compute_footprint
from core.pricing import price_micros
from core.receipts import utc_timestamp
from pipelines.gateway.auth import Caller
from pipelines.gateway.budgets import Prepaid, RateLimiter, Reservation
from pipelines.gateway.publisher import UsagePublisher
from pipelines.gateway.receipts import ReceiptWriter
from pipelines.gateway.routing import AUTO, Candidate
from pipelines.gateway.upstream import Attempt

RECEIPT_SCHEMA = "joulestream.gateway-receipt.v1"
ENDPOINT_NAMES = {"chat": "chat.completions", "completions": "completions", "embeddings": "embeddings"}


def fmt(x: float) -> str:
    """A header number: plain decimal, 6 decimals at most, no trailing zeros ("0.31", "12.5", "0")."""
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s if s and s != "-0" else "0"


@dataclass
class Tokens:
    uncached: int
    cached: int
    output: int
    estimated: bool
    parts: dict[str, int] = field(default_factory=dict)  # modality parts (UsageEvent.MODALITY_FIELDS names)

    @property
    def input(self) -> int:
        return self.uncached + self.cached


@dataclass
class RequestCtx:
    """Everything known about one request on its way through."""

    endpoint: str
    request_id: str
    uid: Any  # the UUIDv7: event id, and (hex) receipt id
    started: datetime
    caller: Caller
    body: dict[str, Any]
    tier: RoutingTier
    tier_rule: str
    prompt_est: int
    factors: FactorSet  # the set every figure of this request is computed with
    prices: Callable[[str, str, str], Prices | None] = lambda org, provider, model: None  # org overrides
    reservation: Reservation | None = None
    attempts: list[Attempt] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # extra usage-event labels (a batch line: batch_id)

    @property
    def event_id(self) -> str:
        return str(self.uid)

    @property
    def receipt_id(self) -> str:
        return f"rcpt_{self.uid.hex}"


def usage_tokens(usage: Any) -> Tokens | None:
    """Tokens from an OpenAI `usage` object (cached tokens from prompt_tokens_details.cached_tokens)."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    if not isinstance(prompt, int) or isinstance(prompt, bool) or prompt < 0:
        return None
    out = usage.get("completion_tokens")
    out = out if isinstance(out, int) and not isinstance(out, bool) and out >= 0 else 0
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    cached = cached if isinstance(cached, int) and not isinstance(cached, bool) else 0
    cached = min(max(cached, 0), prompt)
    return Tokens(prompt - cached, cached, out, False, _modality_parts(details, usage, prompt - cached, out))


def _count(d: Any, key: str) -> int:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _modality_parts(prompt_details: Any, usage: dict, uncached: int, output: int) -> dict[str, int]:
    """The audio/image parts the upstream reports (prompt_tokens_details / completion_tokens_details
    .audio_tokens / .image_tokens, parts of prompt_tokens / completion_tokens). The cached split of a modality
    is not reported: its tokens count as uncached, capped at the uncached total."""
    done = usage.get("completion_tokens_details")
    parts: dict[str, int] = {}
    room_in, room_out = uncached, output
    for name, d, key in (
        ("input_audio_tokens", prompt_details, "audio_tokens"),
        ("input_image_tokens", prompt_details, "image_tokens"),
        ("output_audio_tokens", done, "audio_tokens"),
        ("output_image_tokens", done, "image_tokens"),
    ):
        n = _count(d, key)
        if not n:
            continue
        if name.startswith("input"):
            n = min(n, room_in)
            room_in -= n
        else:
            n = min(n, room_out)
            room_out -= n
        parts[name] = n
    return parts


def answer_text_len(endpoint: str, data: dict[str, Any]) -> int:
    """Characters of generated text in a non-streamed answer (to estimate output tokens without usage)."""
    n = 0
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if endpoint == "chat":
            msg = choice.get("message") or {}
            content = msg.get("content")
            n += len(content) if isinstance(content, str) else 0
            for call in msg.get("tool_calls") or ():
                if isinstance(call, dict):
                    n += len(str(call.get("function", "")))
        else:
            text = choice.get("text")
            n += len(text) if isinstance(text, str) else 0
    return n


def footprint(ctx: RequestCtx, cand: Candidate, model: str, t: Tokens) -> Footprint:
    """The request's footprint, with the factor set it took at its start and the org's price override."""
    provider = cand.upstream.provider
    return compute_footprint(
        ctx.factors,
        provider=provider,
        model=model,
        region=cand.upstream.region,
        input_tokens_uncached=t.uncached,
        input_tokens_cached=t.cached,
        input_tokens_cache_creation=0,
        output_tokens=t.output,
        prices=ctx.prices(ctx.caller.org_id, provider, model),
        extra=Extra(tuple(t.parts.get(f, 0) for f in MODALITY_FIELDS)) if t.parts else None,
    )


def _mg(kg: float | None) -> float | None:
    return None if kg is None else kg * 1e6


def _ml(litres: float | None) -> float | None:
    return None if litres is None else litres * 1e3


def v2_headers(fp: Footprint) -> dict[str, str]:
    """The methodology v2 headers, each present only when the factor set (and, for cost, a price) gives it."""
    out = {"X-Energy-Source": fp.energy_source.value}
    for name, value in (
        ("X-Carbon-Market-mg", _mg(fp.co2_kg_market)),
        ("X-Carbon-Embodied-mg", _mg(fp.co2_kg_embodied)),
        ("X-Water-mL", _ml(fp.water_l)),
    ):
        if value is not None:
            out[name] = fmt(value)
    if fp.cost_usd is not None:  # a request costs fractions of a cent: ten decimals
        out["X-Cost-USD"] = f"{fp.cost_usd:.10f}".rstrip("0").rstrip(".") or "0"
    return out


def energy_headers(ctx: RequestCtx, cand: Candidate, fp: Footprint, t: Tokens) -> dict[str, str]:
    return {
        "X-Request-Id": ctx.request_id,
        "X-Energy-Joules": fmt(fp.energy_j),
        "X-Carbon-mg": fmt(fp.co2_kg * 1e6),
        "X-Routed-To": cand.upstream.routed_to,
        "X-Tier": ctx.tier.value,
        "X-Receipt-Id": ctx.receipt_id,
        "X-Tokens-Estimated": "true" if t.estimated else "false",
        "X-Energy-Estimated": "true" if (t.estimated or fp.is_estimated) else "false",
        "X-Factors-Version": fp.factors_version,
        **v2_headers(fp),
    }


class Books:
    """Books finished requests: the usage event (to the publisher), the receipt (to the writer), the token
    budget and the prepaid settlement. Synchronous and cheap: nothing here waits on I/O."""

    def __init__(self, receipts: ReceiptWriter, limiter: RateLimiter, prepaid: Prepaid) -> None:
        self.receipts, self.limiter, self.prepaid = receipts, limiter, prepaid
        self.publisher: UsagePublisher | None = None  # set when the gateway starts
        self.served = 0

    def record(self, ctx: RequestCtx, cand: Candidate, model: str, t: Tokens, fp: Footprint) -> int:
        """Book a finished request; returns its price in micro-USD."""
        ended = datetime.now(UTC)
        u = cand.upstream
        price = price_micros(t.input, t.output, u.price_in_per_1m, u.price_out_per_1m)
        event = UsageEvent(
            event_id=ctx.event_id,
            source=Source.gateway,
            org_id=ctx.caller.org_id,
            project_id=ctx.caller.project_id,
            workload_id=ctx.caller.workload_id,
            provider=u.provider,
            model=model,
            region=u.region,
            routing_tier=ctx.tier,
            bucket_start=ctx.started,
            bucket_end=ended,
            event_timestamp=ended,
            input_tokens_uncached=t.uncached,
            input_tokens_cached=t.cached,
            output_tokens=t.output,
            request_count=1,
            **t.parts,
            labels={
                "request_id": ctx.request_id,
                "receipt_id": ctx.receipt_id,
                "upstream": u.name,
                "silicon": u.silicon,
                "endpoint": ENDPOINT_NAMES[ctx.endpoint],
                **(
                    {"api_key_id": ctx.caller.key_id}
                    if ctx.caller.key_id
                    else {"user_id": ctx.caller.user_id or ""}
                ),
                "tokens_estimated": "true" if t.estimated else "false",
                # the sustainability score's routing and waste dimensions (core/insights/score.py)
                ROUTING_LABEL: "auto" if ctx.body.get("model") == AUTO else "pinned",
                FAILED_ATTEMPTS_LABEL: str(len(ctx.attempts)),
                FACTORS_VERSION_LABEL: fp.factors_version,
                **ctx.labels,
            },
        )
        assert self.publisher is not None
        self.publisher.publish(ctx.event_id.encode(), event.model_dump_json().encode())
        self.receipts.add(ctx.receipt_id, ctx.caller.org_id, receipt(ctx, cand, model, t, fp, price, ended))
        self.limiter.charge_tokens(ctx.caller, t.input + t.output)
        self.prepaid.settle(ctx.reservation, price)
        ctx.reservation = None
        self.served += 1
        return price


def receipt(
    ctx: RequestCtx, cand: Candidate, model: str, t: Tokens, fp: Footprint, price: int, ended: datetime
) -> dict[str, Any]:
    """The body of a request's receipt (signed by the ReceiptWriter)."""
    u = cand.upstream
    return {
        "schema": RECEIPT_SCHEMA,
        "receipt_id": ctx.receipt_id,
        "request_id": ctx.request_id,
        "event_id": ctx.event_id,
        "org_id": ctx.caller.org_id,
        "project_id": ctx.caller.project_id,
        "workload_id": ctx.caller.workload_id,
        "endpoint": ENDPOINT_NAMES[ctx.endpoint],
        "requested_model": ctx.body.get("model"),
        "model": model,
        "routed_to": u.routed_to,
        "upstream": u.name,
        "tier": ctx.tier.value,
        "tier_rule": ctx.tier_rule,
        "tokens": {
            "input_uncached": t.uncached,
            "input_cached": t.cached,
            "output": t.output,
            "total": t.input + t.output,
            "estimated": t.estimated,
        },
        "energy_j": fp.energy_j,
        "energy_j_low": fp.energy_j_low,
        "energy_j_high": fp.energy_j_high,
        "carbon_mg": fp.co2_kg * 1e6,
        "carbon_mg_low": fp.co2_kg_low * 1e6,
        "carbon_mg_high": fp.co2_kg_high * 1e6,
        "is_estimated": t.estimated or fp.is_estimated,
        "estimation_reasons": list(fp.estimation_reasons)
        + (["tokens estimated: the upstream reported no usage"] if t.estimated else []),
        "energy_source": fp.energy_source.value,
        "carbon_market_mg": _mg(fp.co2_kg_market),
        "carbon_market_mg_low": _mg(fp.co2_kg_market_low),
        "carbon_market_mg_high": _mg(fp.co2_kg_market_high),
        "carbon_embodied_mg": _mg(fp.co2_kg_embodied),
        "carbon_embodied_mg_low": _mg(fp.co2_kg_embodied_low),
        "carbon_embodied_mg_high": _mg(fp.co2_kg_embodied_high),
        "water_ml": _ml(fp.water_l),
        "water_ml_low": _ml(fp.water_l_low),
        "water_ml_high": _ml(fp.water_l_high),
        "cost_usd_micros": None if fp.cost_usd is None else fp.cost_usd * 1e6,
        "price_source": fp.price_source,
        "factors_version": fp.factors_version,
        "factors": {
            "model_tier": fp.model_tier,
            "pue": fp.pue,
            "grid_intensity_kg_per_kwh": fp.grid_intensity_kg_per_kwh,
            "j_per_prefill_token": fp.j_per_prefill_token,
            "j_per_decode_token": fp.j_per_decode_token,
            "j_per_cached_token": fp.j_per_cached_token,
            "grid_market_intensity_kg_per_kwh": fp.grid_market_intensity_kg_per_kwh,
            "embodied_kg_per_it_kwh": (
                None if fp.embodied_kg_per_it_j is None else fp.embodied_kg_per_it_j * J_PER_KWH
            ),
            "wue_onsite_l_per_kwh": fp.wue_onsite_l_per_kwh,
            "water_offsite_l_per_kwh": fp.water_offsite_l_per_kwh,
            "price_usd_per_1m_input": fp.price_usd_per_1m_input,
            "price_usd_per_1m_cached": fp.price_usd_per_1m_cached,
            "price_usd_per_1m_cache_write": fp.price_usd_per_1m_cache_write,
            "price_usd_per_1m_output": fp.price_usd_per_1m_output,
        },
        "price_usd_micros": price,
        "started_at": utc_timestamp(ctx.started),
        "completed_at": utc_timestamp(ended),
    }
