"""The inference gateway: an OpenAI-compatible FastAPI app with carbon-aware routing, energy headers,
signed receipts, budgets and durable usage publishing. See docs/gateway.md.

    app = create_gateway_app(load_settings(), load_routes("routes.yaml"))
    uvicorn.run(app, host="127.0.0.1", port=8788)

The app's lifespan starts and stops the background parts (`app.state.gateway.start()/stop()`); when the app
is mounted inside another ASGI app (whose lifespan does not reach mounted apps), call those two yourself.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse
from uuid6 import uuid7

from controlplane import FactorVersions, get_engine
from core.contracts import RoutingTier, Source, UsageEvent
from core.methodology import FactorSet, Footprint, compute_footprint, load_factor_set
from core.receipts import Keyring, utc_timestamp
from core.settings import Settings
from pipelines.gateway import classify as cls
from pipelines.gateway.auth import Authenticator, Caller
from pipelines.gateway.budgets import Prepaid, RateLimiter, Reservation
from pipelines.gateway.config import GatewayConfig
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.publisher import UsagePublisher
from pipelines.gateway.receipts import ReceiptWriter
from pipelines.gateway.routing import Candidate, Router
from pipelines.gateway.schemas import MODELS, describe_errors
from pipelines.gateway.spool import Spool
from pipelines.gateway.upstream import (
    BAD_ANSWER,
    Attempt,
    ClientFault,
    UpstreamFailure,
    UpstreamPool,
)

log = logging.getLogger("joulestream.gateway")

MAX_BODY_BYTES = 16 << 20
RECEIPT_SCHEMA = "joulestream.gateway-receipt.v1"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
_RECEIPT_ID_RE = re.compile(r"^rcpt_[0-9a-f]{32}$")
PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
ENDPOINT_NAMES = {"chat": "chat.completions", "completions": "completions", "embeddings": "embeddings"}


def _fmt(x: float) -> str:
    """A header number: plain decimal, 6 decimals at most, no trailing zeros ("0.31", "12.5", "0")."""
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s if s and s != "-0" else "0"


@dataclass
class Tokens:
    uncached: int
    cached: int
    output: int
    estimated: bool

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
    reservation: Reservation | None = None
    attempts: list[Attempt] = field(default_factory=list)

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
    return Tokens(prompt - cached, cached, out, False)


def _answer_text_len(endpoint: str, data: dict[str, Any]) -> int:
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


class Gateway:
    """The gateway's state and request handling; `create_gateway_app` wraps it in FastAPI."""

    def __init__(
        self,
        settings: Settings,
        config: GatewayConfig,
        *,
        engine: Engine,
        factors: FactorSet,
        keyring: Keyring,
        spool_dir: Path,
        publisher_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings, self.config, self.engine, self.factors, self.keyring = (
            settings,
            config,
            engine,
            factors,
            keyring,
        )
        self.router = Router(config, factors)
        self.auth = Authenticator(engine, config.auth_cache_ttl_s)
        self.limiter = RateLimiter(config.budgets)
        self.prepaid = Prepaid(engine, config.billing)
        self.receipts = ReceiptWriter(engine, keyring)
        self.pool = UpstreamPool(config.upstreams)
        self.spool_dir = spool_dir
        self.publisher_options = publisher_options or {}
        self.spool: Spool | None = None
        self.publisher: UsagePublisher | None = None
        self.started = False
        self.served = 0

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.started:
            return
        sp = self.config.spool
        self.spool = Spool(self.spool_dir, max_bytes=sp.max_bytes, segment_bytes=sp.segment_bytes)
        self.publisher = UsagePublisher(self.settings, self.spool, **self.publisher_options)
        await self.publisher.start()
        await self.receipts.start()
        await self.prepaid.start()
        await self.pool.start()
        self.started = True
        log.info(
            "gateway started: %d upstreams, spool %s (%d events pending)",
            len(self.config.upstreams),
            self.spool_dir,
            self.spool.depth,
        )

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        await self.pool.close()
        assert self.publisher is not None and self.spool is not None
        await self.publisher.stop()
        await self.receipts.stop()
        await self.prepaid.stop()
        self.spool.close()

    def health(self) -> tuple[int, dict[str, Any]]:
        if self.publisher is None:
            return 503, {"status": "starting"}
        pub = self.publisher.stats()
        spool = pub.pop("spool")
        status = "ok"
        if spool["full"]:
            status = "unavailable"
        elif pub["kafka"] != "connected" or spool["events"]:
            status = "degraded"
        body = {
            "status": status,
            "kafka": pub,
            "spool": {"depth": spool["events"], **spool},
            "receipts_pending": self.receipts.pending,
            "upstreams": len(self.config.upstreams),
            "factors_version": self.factors.version,
            "served": self.served,
        }
        return (503 if status == "unavailable" else 200), body

    # ------------------------------------------------------------------------------------------ helpers
    def _footprint(self, cand: Candidate, model: str, t: Tokens) -> Footprint:
        return compute_footprint(
            self.factors,
            provider=cand.upstream.provider,
            model=model,
            region=cand.upstream.region,
            input_tokens_uncached=t.uncached,
            input_tokens_cached=t.cached,
            input_tokens_cache_creation=0,
            output_tokens=t.output,
        )

    @staticmethod
    def _price_micros(cand: Candidate, t: Tokens) -> int:
        u = cand.upstream
        return math.ceil(t.input * u.price_in_per_1m + t.output * u.price_out_per_1m)

    def _headers(self, ctx: RequestCtx, cand: Candidate, fp: Footprint, t: Tokens) -> dict[str, str]:
        return {
            "X-Request-Id": ctx.request_id,
            "X-Energy-Joules": _fmt(fp.energy_j),
            "X-Carbon-mg": _fmt(fp.co2_kg * 1e6),
            "X-Routed-To": cand.upstream.routed_to,
            "X-Tier": ctx.tier.value,
            "X-Receipt-Id": ctx.receipt_id,
            "X-Tokens-Estimated": "true" if t.estimated else "false",
            "X-Energy-Estimated": "true" if (t.estimated or fp.is_estimated) else "false",
            "X-Factors-Version": fp.factors_version,
        }

    def _record(self, ctx: RequestCtx, cand: Candidate, model: str, t: Tokens, fp: Footprint) -> int:
        """Book a finished request: usage event (to the publisher), receipt (to the writer), token budget
        and balance settlement. Returns the price in micro-USD. Synchronous and cheap."""
        ended = datetime.now(UTC)
        u = cand.upstream
        price = self._price_micros(cand, t)
        labels = {
            "request_id": ctx.request_id,
            "receipt_id": ctx.receipt_id,
            "upstream": u.name,
            "silicon": u.silicon,
            "endpoint": ENDPOINT_NAMES[ctx.endpoint],
            "api_key_id": ctx.caller.key_id,
            "tokens_estimated": "true" if t.estimated else "false",
        }
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
            labels=labels,
        )
        assert self.publisher is not None
        self.publisher.publish(ctx.event_id.encode(), event.model_dump_json().encode())
        self.receipts.add(
            ctx.receipt_id,
            ctx.caller.org_id,
            {
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
                "factors_version": fp.factors_version,
                "factors": {
                    "model_tier": fp.model_tier,
                    "pue": fp.pue,
                    "grid_intensity_kg_per_kwh": fp.grid_intensity_kg_per_kwh,
                    "j_per_prefill_token": fp.j_per_prefill_token,
                    "j_per_decode_token": fp.j_per_decode_token,
                    "j_per_cached_token": fp.j_per_cached_token,
                },
                "price_usd_micros": price,
                "started_at": utc_timestamp(ctx.started),
                "completed_at": utc_timestamp(ended),
            },
        )
        self.limiter.charge_tokens(ctx.caller, t.input + t.output)
        self.prepaid.settle(ctx.reservation, price)
        self.served += 1
        return price

    def _payload(self, ctx: RequestCtx, cand: Candidate, stream: bool) -> bytes:
        body = ctx.body
        if body.get("model") != cand.model or (stream and not _wants_usage(body)):
            body = dict(body)
            body["model"] = cand.model
            if stream:
                opts = dict(body.get("stream_options") or {})
                opts["include_usage"] = True  # always ask: the usage chunk is what gets booked
                body["stream_options"] = opts
        return orjson.dumps(body)

    def _final_error(self, ctx: RequestCtx) -> GatewayError:
        tried = "; ".join(f"{a.upstream}: {a.detail}" for a in ctx.attempts)
        if any(a.kind == BAD_ANSWER for a in ctx.attempts):
            return GatewayError(
                502,
                f"Every capable upstream failed ({tried}).",
                type="api_error",
                code="upstream_error",
            )
        return GatewayError(
            503,
            f"No capable upstream is reachable right now ({tried}). Retry later.",
            type="api_error",
            code="upstream_unavailable",
            headers={"Retry-After": "1"},
        )

    def _client_fault(self, ctx: RequestCtx, cand: Candidate, fault: ClientFault) -> Response:
        """An upstream 400/413/422: hand it back in OpenAI's shape."""
        try:
            data = orjson.loads(fault.body)
            ok = isinstance(data, dict) and isinstance(data.get("error"), dict)
        except orjson.JSONDecodeError:
            ok = False
        if not ok:
            data = GatewayError(
                fault.status, f"The upstream rejected the request (HTTP {fault.status})."
            ).body()
        return Response(
            orjson.dumps(data),
            status_code=fault.status,
            media_type="application/json",
            headers={
                "X-Request-Id": ctx.request_id,
                "X-Routed-To": cand.upstream.routed_to,
                "X-Tier": ctx.tier.value,
            },
        )

    # ------------------------------------------------------------------------------------------ requests
    async def handle(self, request: Request, endpoint: str) -> Response:
        started = datetime.now(UTC)
        incoming = request.headers.get("x-request-id", "")
        uid = uuid7()
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else f"req_{uid.hex}"
        base = {"X-Request-Id": request_id}
        ctx: RequestCtx | None = None
        try:
            caller = await self.auth.caller(request.headers.get("authorization"))
            body = await self._read_body(request)
            model_cls = MODELS[endpoint]
            try:
                model_cls.model_validate(body)
            except ValidationError as exc:
                message, param = describe_errors(exc)
                raise GatewayError(422, message, param=param, code="invalid_body") from exc
            if endpoint == "chat":
                prompt_est = cls.estimate_chat_prompt(body["messages"])
            else:
                prompt_est = cls.estimate_prompt_input(
                    body.get("prompt" if endpoint == "completions" else "input")
                )
            self.limiter.admit(caller)
            if self.publisher is None:
                raise GatewayError(503, "The gateway is starting.", type="api_error", code="starting")
            if self.publisher.full:
                raise GatewayError(
                    503,
                    "The usage spool is full (Kafka has been unreachable for too long); requests are refused "
                    "until it drains.",
                    type="api_error",
                    code="spool_full",
                    headers={"Retry-After": "10"},
                )
            c = cls.classify(endpoint, body, prompt_est, request.headers.get("x-joulestream-tier"))
            stream = bool(body.get("stream")) and endpoint != "embeddings"
            out_max = cls.max_output(body)
            rank_out = (
                0 if endpoint == "embeddings" else (out_max or self.config.routing.default_output_tokens)
            )
            cands = self.router.candidates(endpoint, body["model"], c.tier, prompt_est, rank_out)
            ctx = RequestCtx(endpoint, request_id, uid, started, caller, body, c.tier, c.rule, prompt_est)
            reserve_out = (
                0
                if endpoint == "embeddings"
                else (out_max or self.config.billing.default_output_reserve_tokens)
            )
            first = cands[0].upstream  # a fallback to a dearer upstream is charged at settlement
            reserve = math.ceil(prompt_est * first.price_in_per_1m + reserve_out * first.price_out_per_1m)
            ctx.reservation = await self.prepaid.reserve(caller, reserve)
            try:
                if stream:
                    return await self._stream(ctx, cands)
                return await self._forward(ctx, cands)
            except BaseException:
                self.prepaid.settle(ctx.reservation, 0)  # nothing served: refund the reservation
                raise
        except GatewayError as err:
            extra = dict(base)
            if ctx is not None:
                extra["X-Tier"] = ctx.tier.value
            return err.response(extra)
        except Exception:
            log.exception("gateway error request_id=%s", request_id)
            return GatewayError(
                503, "The gateway hit an internal error; retry.", type="api_error", code="internal_error"
            ).response(base)

    async def _read_body(self, request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise GatewayError(
                413, f"Request body larger than {MAX_BODY_BYTES} bytes.", code="body_too_large"
            )
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise GatewayError(
                413, f"Request body larger than {MAX_BODY_BYTES} bytes.", code="body_too_large"
            )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(
                400,
                "We could not parse the JSON body of your request. Send a JSON object (Content-Type: application/json).",
                code="invalid_json",
            ) from None
        if not isinstance(body, dict):
            raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
        return body

    async def _forward(self, ctx: RequestCtx, cands: list[Candidate]) -> Response:
        path = PATHS[ctx.endpoint]
        for cand in cands:
            try:
                answer = await self.pool.call(cand.upstream, path, self._payload(ctx, cand, False))
            except UpstreamFailure as f:
                ctx.attempts.append(f.attempt)
                continue
            except ClientFault as fault:
                self.prepaid.settle(ctx.reservation, 0)
                ctx.reservation = None
                return self._client_fault(ctx, cand, fault)
            data = answer.data
            model = (
                data.get("model") if isinstance(data.get("model"), str) and data.get("model") else cand.model
            )
            tokens = usage_tokens(data.get("usage"))
            if tokens is None:
                out = (
                    0
                    if ctx.endpoint == "embeddings"
                    else cls.tokens_for_chars(_answer_text_len(ctx.endpoint, data))
                )
                tokens = Tokens(ctx.prompt_est, 0, out, True)
            fp = self._footprint(cand, model, tokens)
            self._record(ctx, cand, model, tokens, fp)
            ctx.reservation = None
            return Response(
                answer.body,
                status_code=200,
                media_type="application/json",
                headers=self._headers(ctx, cand, fp, tokens),
            )
        raise self._final_error(ctx)

    async def _stream(self, ctx: RequestCtx, cands: list[Candidate]) -> Response:
        path = PATHS[ctx.endpoint]
        for cand in cands:
            try:
                resp = await self.pool.open_stream(cand.upstream, path, self._payload(ctx, cand, True))
            except UpstreamFailure as f:
                ctx.attempts.append(f.attempt)
                continue
            except ClientFault as fault:
                self.prepaid.settle(ctx.reservation, 0)
                ctx.reservation = None
                return self._client_fault(ctx, cand, fault)
            # Headers go out before the body: they carry an estimate (prompt tokens counted from the
            # request, output = max_tokens or routing.default_output_tokens), flagged as such. The receipt
            # and the usage event use the usage of the final chunk (docs/gateway.md, "Streaming").
            est = Tokens(
                ctx.prompt_est, 0, cls.max_output(ctx.body) or self.config.routing.default_output_tokens, True
            )
            fp = self._footprint(cand, cand.model, est)
            headers = self._headers(ctx, cand, fp, est)
            headers["X-Energy-Basis"] = "stream-estimate"
            headers["Cache-Control"] = "no-cache"
            relay = _StreamRelay(self, ctx, cand, resp, _wants_usage(ctx.body))
            return StreamingResponse(
                relay.run(), status_code=200, media_type="text/event-stream", headers=headers
            )
        raise self._final_error(ctx)


def _wants_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


class _StreamRelay:
    """Relays an upstream SSE stream event by event, books the usage of its final chunk, and — when the
    client asked for `stream_options.include_usage` — adds the actual figures to that chunk as a
    `joulestream` object; when it did not, that chunk (which the gateway always requests) is dropped."""

    def __init__(
        self, gw: Gateway, ctx: RequestCtx, cand: Candidate, resp: aiohttp.ClientResponse, wants_usage: bool
    ) -> None:
        self.gw, self.ctx, self.cand, self.resp, self.wants_usage = gw, ctx, cand, resp, wants_usage
        self.tokens: Tokens | None = None
        self.model = cand.model
        self.out_chars = 0
        self.booked = False

    def _book(self) -> dict[str, Any]:
        tokens = self.tokens
        if tokens is None:
            tokens = Tokens(self.ctx.prompt_est, 0, cls.tokens_for_chars(self.out_chars), True)
        fp = self.gw._footprint(self.cand, self.model, tokens)
        self.gw._record(self.ctx, self.cand, self.model, tokens, fp)
        self.ctx.reservation = None
        self.booked = True
        return {
            "receipt_id": self.ctx.receipt_id,
            "energy_joules": fp.energy_j,
            "carbon_mg": fp.co2_kg * 1e6,
            "tier": self.ctx.tier.value,
            "routed_to": self.cand.upstream.routed_to,
            "tokens_estimated": tokens.estimated,
        }

    def _event(self, event: bytes) -> bytes | None:
        data = None
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                data = line[5:].strip()
        if data is None or data == b"[DONE]":
            return event
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(obj, dict):
            return event
        if isinstance(obj.get("model"), str) and obj["model"]:
            self.model = obj["model"]
        usage = obj.get("usage")
        tokens = usage_tokens(usage) if usage else None
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict):
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(text, str):
                    self.out_chars += len(text)
        if tokens is None:
            return event
        self.tokens = tokens
        figures = self._book()
        if self.wants_usage:
            obj["joulestream"] = figures
            return b"data: " + orjson.dumps(obj) + b"\n\n"
        if obj.get("choices"):
            obj["usage"] = None
            return b"data: " + orjson.dumps(obj) + b"\n\n"
        return None

    async def run(self) -> AsyncIterator[bytes]:
        buf = b""
        try:
            async for chunk in self.resp.content.iter_any():
                buf += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
                while True:
                    i = buf.find(b"\n\n")
                    if i < 0:
                        break
                    event, buf = buf[: i + 2], buf[i + 2 :]
                    out = self._event(event)
                    if out is not None:
                        yield out
            if buf.strip():
                out = self._event(buf + b"\n\n")
                if out is not None:
                    yield out
        except (aiohttp.ClientError, TimeoutError) as exc:
            err = GatewayError(
                502,
                f"The upstream stream broke off: {type(exc).__name__}",
                type="api_error",
                code="upstream_stream_error",
            )
            yield b"data: " + orjson.dumps(err.body()) + b"\n\n"
        finally:
            self.resp.release()
            if not self.booked:
                try:
                    self._book()
                except Exception:
                    log.exception("booking a stream's usage failed request_id=%s", self.ctx.request_id)


# --------------------------------------------------------------------------------------------- app


HOT_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings"}


class GatewayApp(FastAPI):
    """FastAPI, with the three inference routes served straight from the ASGI entry point: they skip the
    routing and middleware layers (~0.1 ms a request), which the gateway does not use — it parses, validates
    and answers errors itself. Every other path (models, receipts, health, docs) goes through FastAPI; the
    inference routes are declared there too, for the OpenAPI document."""

    gateway: Gateway

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            endpoint = HOT_PATHS.get(path)
            if endpoint is not None:
                response = await self.gateway.handle(Request(scope, receive), endpoint)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _default_factors(engine: Engine) -> FactorSet:
    try:
        current = FactorVersions(engine).current()
    except SQLAlchemyError:  # no table yet / unreadable: the built-in set
        current = None
    return current.factor_set if current is not None else load_factor_set()


def create_gateway_app(
    settings: Settings,
    routes: GatewayConfig,
    *,
    engine: Engine | None = None,
    factors: FactorSet | None = None,
    keyring: Keyring | None = None,
    spool_dir: str | Path | None = None,
    publisher_options: dict[str, Any] | None = None,
) -> FastAPI:
    """The gateway as a FastAPI app (routes under /v1, plus /health). `app.state.gateway` is the `Gateway`.

    settings           Kafka / topic prefix / data dir / control-plane URL
    routes             the routing file (`pipelines.gateway.config.load_routes`)
    engine             control-plane engine (default `get_engine(settings.database)`), already migrated
    factors            carbon factor set (default: the control plane's current version, else built-in v1.0)
    keyring            receipt signing keys (default `Keyring.load(settings.home)`)
    spool_dir          default `routes.spool.dir` or `$JOULESTREAM_HOME/gateway/spool`
    publisher_options  `UsagePublisher` keyword overrides (timeouts; tests)
    """
    engine = engine or get_engine(settings.database)
    factors = factors or _default_factors(engine)
    keyring = keyring or Keyring.load(settings.home)
    spool = Path(spool_dir or routes.spool.dir or settings.home / "gateway" / "spool")
    gw = Gateway(
        settings,
        routes,
        engine=engine,
        factors=factors,
        keyring=keyring,
        spool_dir=spool,
        publisher_options=publisher_options,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = GatewayApp(
        title="joulestream inference gateway",
        description="OpenAI-compatible gateway with carbon-aware routing, energy headers and signed receipts.",
        lifespan=lifespan,
        docs_url="/v1/docs",
        openapi_url="/v1/openapi.json",
        redoc_url=None,
    )
    app.state.gateway = gw
    app.gateway = gw

    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code if exc.status_code in (404, 405) else 400
        msg = (
            f"Unknown path {request.method} {request.url.path}"
            if exc.status_code == 404
            else f"Method {request.method} not allowed on {request.url.path}"
            if exc.status_code == 405
            else str(exc.detail)
        )
        return GatewayError(status, msg, code="unknown_url" if status == 404 else None).response()

    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return GatewayError(422, f"Invalid request: {exc.errors()[:3]}", code="invalid_request").response()

    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]

    @app.post("/v1/chat/completions", summary="Chat completions (OpenAI shape)")
    async def chat_completions(request: Request) -> Response:
        return await gw.handle(request, "chat")

    @app.post("/v1/completions", summary="Legacy text completions (OpenAI shape)")
    async def completions(request: Request) -> Response:
        return await gw.handle(request, "completions")

    @app.post("/v1/embeddings", summary="Embeddings (OpenAI shape)")
    async def embeddings(request: Request) -> Response:
        return await gw.handle(request, "embeddings")

    @app.get("/v1/models", summary="Models with their routing tiers and cost tier")
    async def models(request: Request) -> Response:
        try:
            await gw.auth.caller(request.headers.get("authorization"), scope=("ingest", "read"))
        except GatewayError as err:
            return err.response()
        return Response(
            orjson.dumps({"object": "list", "data": gw.router.model_list()}), media_type="application/json"
        )

    @app.get("/v1/receipts/public-key", summary="Public keys that verify receipts (no auth)")
    async def public_key() -> Response:
        keys = gw.keyring.public_keys()
        return Response(
            orjson.dumps({"algorithm": "ed25519", **keys[0], "keys": keys}), media_type="application/json"
        )

    @app.get("/v1/receipts/{receipt_id}", summary="A signed receipt of the caller's org")
    async def receipt(receipt_id: str, request: Request) -> Response:
        try:
            caller = await gw.auth.caller(request.headers.get("authorization"), scope=("ingest", "read"))
        except GatewayError as err:
            return err.response()
        rec = await gw.receipts.get(caller.org_id, receipt_id) if _RECEIPT_ID_RE.match(receipt_id) else None
        if rec is None:
            return GatewayError(
                404,
                f"No receipt {receipt_id!r} for this organization.",
                param="receipt_id",
                code="receipt_not_found",
            ).response()
        return Response(
            orjson.dumps({"id": receipt_id, "object": "receipt", **rec.model_dump()}),
            media_type="application/json",
        )

    @app.get("/health", summary="Liveness, Kafka state and usage spool depth")
    async def health() -> Response:
        status, body = gw.health()
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    return app
