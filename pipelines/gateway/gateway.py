"""The gateway's state and request handling: authenticate, validate, classify, route, forward (or relay a
stream), book. `pipelines.gateway.app.create_gateway_app` wraps it in FastAPI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import orjson
from fastapi import Request
from pydantic import ValidationError
from sqlalchemy import Engine
from starlette.responses import Response, StreamingResponse
from uuid6 import uuid7

from controlplane.factor_resolver import FactorResolver
from controlplane.jwt import JwtSettings, JwtVerifier
from controlplane.prices import PriceLookup
from controlplane.sessions import Sessions
from core.metrics import record_gateway_request
from core.pricing import price_micros
from core.ratelimit import Limiter
from core.receipts import Keyring
from core.settings import Settings
from pipelines.gateway import classify as cls
from pipelines.gateway.auth import Authenticator, Caller
from pipelines.gateway.booking import (
    Books,
    RequestCtx,
    Tokens,
    answer_text_len,
    energy_headers,
    footprint,
    usage_tokens,
)
from pipelines.gateway.budgets import Prepaid, RateLimiter
from pipelines.gateway.config import GatewayConfig
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.publisher import UsagePublisher
from pipelines.gateway.receipts import ReceiptWriter
from pipelines.gateway.relay import StreamRelay, wants_usage
from pipelines.gateway.routing import Candidate, Router
from pipelines.gateway.schemas import MODELS, describe_errors, read_body
from pipelines.gateway.spool import Spool
from pipelines.gateway.upstream import ClientFault, UpstreamFailure, UpstreamPool, final_error

log = logging.getLogger("joulestream.gateway")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
# seconds the current request has waited on upstreams (core/metrics.py: the gateway's added latency)
_UPSTREAM_WAIT: ContextVar[list[float] | None] = ContextVar("joulestream_upstream_wait", default=None)
T = TypeVar("T")


class Gateway:
    """The gateway's parts and its request handling. `start()`/`stop()` run the background parts: usage
    publisher, receipt writer, balance flusher, upstream connection pool and the factor-version watch
    (which re-reads the control plane's current factor set every `factors.ttl_s`, off the event loop)."""

    def __init__(
        self,
        settings: Settings,
        config: GatewayConfig,
        *,
        engine: Engine,
        factors: FactorResolver,
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
        self.router = Router(config, lambda: factors.cached)
        jwt_settings = JwtSettings.from_settings(settings)
        self.auth = Authenticator(
            engine,
            config.auth_cache_ttl_s,
            Sessions(engine, settings),
            JwtVerifier(jwt_settings) if jwt_settings else None,
        )
        self.limiter = RateLimiter(config.budgets, Limiter.from_settings(settings))
        self.prepaid = Prepaid(engine, config.billing)
        self.receipts = ReceiptWriter(engine, keyring)
        # the orgs' price overrides: read at start and with every factor re-read, off the event loop
        self.prices = PriceLookup(engine, ttl_s=math.inf)
        self._price_lookup = self.prices.prices()
        self.books = Books(self.receipts, self.limiter, self.prepaid)
        self.pool = UpstreamPool(config.upstreams)
        self.spool_dir = spool_dir
        self.publisher_options = publisher_options or {}
        self.spool: Spool | None = None
        self.publisher: UsagePublisher | None = None
        self._factor_watch: asyncio.Task[None] | None = None
        self.started = False

    @property
    def served(self) -> int:
        return self.books.served

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.started:
            return
        sp = self.config.spool
        self.spool = Spool(self.spool_dir, max_bytes=sp.max_bytes, segment_bytes=sp.segment_bytes)
        self.publisher = UsagePublisher(self.settings, self.spool, **self.publisher_options)
        self.books.publisher = self.publisher
        await self.publisher.start()
        await self.receipts.start()
        await self.prepaid.start()
        await self.pool.start()
        await asyncio.to_thread(self.prices.refresh)
        self._factor_watch = asyncio.create_task(self._watch_factors(), name="gateway-factor-watch")
        self.started = True
        log.info(
            "gateway started: %d upstreams, spool %s (%d events pending), factors %s",
            len(self.config.upstreams),
            self.spool_dir,
            self.spool.depth,
            self.factors.cached.version,
        )

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        if self._factor_watch is not None:
            self._factor_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._factor_watch
            self._factor_watch = None
        await self.pool.close()
        assert self.publisher is not None and self.spool is not None
        await self.publisher.stop()
        await self.receipts.stop()
        await self.prepaid.stop()
        self.spool.close()

    async def _watch_factors(self) -> None:
        while True:
            await asyncio.sleep(max(self.factors.ttl_s, 0.05))
            await asyncio.to_thread(self.factors.refresh)  # never raises for the control plane's sake
            await asyncio.to_thread(self.prices.refresh)  # nor does this (the last good read stays)

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
            "factors_version": self.factors.cached.version,
            "served": self.served,
        }
        return (503 if status == "unavailable" else 200), body

    # ------------------------------------------------------------------------------------------ requests
    async def handle(self, request: Request, endpoint: str) -> Response:
        """One inference request, counted and timed (core/metrics.py: status, tier, upstream; added latency)."""
        waited = [0.0]
        token = _UPSTREAM_WAIT.set(waited)
        t0 = time.perf_counter()
        try:
            response = await self._handle(request, endpoint)
        finally:
            _UPSTREAM_WAIT.reset(token)
        h = response.headers
        record_gateway_request(
            endpoint,
            response.status_code,
            h.get("x-tier"),
            h.get("x-routed-to"),
            time.perf_counter() - t0,
            waited[0],
        )
        return response

    @staticmethod
    async def _upstream(call: Awaitable[T]) -> T:
        """Await an upstream call, adding its duration to the request's upstream wait."""
        t0 = time.perf_counter()
        try:
            return await call
        finally:
            waited = _UPSTREAM_WAIT.get()
            if waited is not None:
                waited[0] += time.perf_counter() - t0

    async def _handle(self, request: Request, endpoint: str) -> Response:
        incoming = request.headers.get("x-request-id", "")
        uid = uuid7()
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else f"req_{uid.hex}"
        try:
            caller = await self.auth.caller(
                request.headers.get("authorization"), "ingest", request.headers.get("x-org-slug")
            )
            body = await read_body(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-shaped answer
            return self._failure(exc, request_id, None)
        return await self.serve(
            endpoint,
            caller,
            body,
            request_id=request_id,
            uid=uid,
            tier=request.headers.get("x-joulestream-tier"),
        )

    async def serve(
        self,
        endpoint: str,
        caller: Caller,
        body: dict[str, Any],
        *,
        request_id: str,
        uid: UUID,
        tier: str | None = None,
        allow_stream: bool = True,
        labels: dict[str, str] | None = None,
    ) -> Response:
        """One authenticated request's body through validation, budgets, routing, the upstream and booking.
        `uid` is the usage event id (and, as hex, the receipt id): the live path passes a new UUIDv7, the
        batch runner one derived from (batch, custom_id), so a re-run line books the same event and receipt."""
        started = datetime.now(UTC)
        factors = self.factors.cached
        ctx: RequestCtx | None = None
        try:
            model_cls = MODELS[endpoint]
            try:
                model_cls.model_validate(body)
            except ValidationError as exc:
                message, param = describe_errors(exc)
                raise GatewayError(422, message, param=param, code="invalid_body") from exc
            prompt_est = _prompt_estimate(endpoint, body)
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
            c, out_max, cands = self._route(endpoint, body, prompt_est, tier)
            stream = allow_stream and bool(body.get("stream")) and endpoint != "embeddings"
            ctx = RequestCtx(
                endpoint,
                request_id,
                uid,
                started,
                caller,
                body,
                c.tier,
                c.rule,
                prompt_est,
                factors,
                prices=self._price_lookup,
                labels=labels or {},
            )
            reserve_out = (
                0
                if endpoint == "embeddings"
                else (out_max or self.config.billing.default_output_reserve_tokens)
            )
            first = cands[0].upstream  # a fallback to a dearer upstream is charged at settlement
            reserve = price_micros(prompt_est, reserve_out, first.price_in_per_1m, first.price_out_per_1m)
            ctx.reservation = await self.prepaid.reserve(caller, reserve)
            try:
                if stream:
                    return await self._stream(ctx, cands)
                return await self._forward(ctx, cands)
            except BaseException:
                self.prepaid.settle(ctx.reservation, 0)  # nothing served: refund the reservation
                raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-shaped answer
            return self._failure(exc, request_id, ctx)

    def _route(
        self, endpoint: str, body: dict[str, Any], prompt_est: int, tier: str | None
    ) -> tuple[cls.Classification, int | None, list[Candidate]]:
        """The request's class, its output cap and the upstreams that may serve it, in the order to try."""
        c = cls.classify(endpoint, body, prompt_est, tier)
        out_max = cls.max_output(body)
        rank_out = 0 if endpoint == "embeddings" else (out_max or self.config.routing.default_output_tokens)
        return c, out_max, self.router.candidates(endpoint, body["model"], c.tier, prompt_est, rank_out)

    def region_for(self, endpoint: str, body: dict[str, Any]) -> str | None:
        """The region of the upstream a request body would be routed to first (None when none can take it)."""
        try:
            _, _, cands = self._route(endpoint, body, _prompt_estimate(endpoint, body), None)
        except (GatewayError, KeyError, TypeError, ValueError):
            return None
        return cands[0].upstream.region if cands else None

    def _failure(self, exc: Exception, request_id: str, ctx: RequestCtx | None) -> Response:
        base = {"X-Request-Id": request_id}
        if isinstance(exc, GatewayError):
            if ctx is not None:
                base["X-Tier"] = ctx.tier.value
            return exc.response(base)
        if isinstance(exc, RecursionError):  # a body the depth check let through but some step could not walk
            log.warning("request body too deeply nested to process request_id=%s", request_id)
            return GatewayError(
                400, "The request body nests objects and arrays too deeply.", code="invalid_json"
            ).response(base)
        log.error("gateway error request_id=%s", request_id, exc_info=exc)
        return GatewayError(
            503, "The gateway hit an internal error; retry.", type="api_error", code="internal_error"
        ).response(base)

    def durable_mark(self) -> int:
        """How many usage events this gateway has accepted so far (see `wait_durable`)."""
        return self.publisher.accepted if self.publisher is not None else 0

    async def wait_durable(self, mark: int, receipt_ids: list[str], timeout_s: float = 60.0) -> bool:
        """Wait until the first `mark` usage events are in Kafka or the spool (fsync'd) and the receipts
        `receipt_ids` are stored: what a caller needs before it records the requests as done. False on
        timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pub = self.publisher
            if (
                pub is not None
                and pub.sent + pub.spooled >= mark
                and not self.receipts.any_pending(receipt_ids)
            ):
                return True
            await asyncio.sleep(0.005)
        return False

    def _client_fault(self, ctx: RequestCtx, cand: Candidate, fault: ClientFault) -> Response:
        """The upstream refused the request as the client's fault: release the reservation, relay its answer."""
        self.prepaid.settle(ctx.reservation, 0)
        ctx.reservation = None
        return fault.response(
            {"X-Request-Id": ctx.request_id, "X-Routed-To": cand.upstream.routed_to, "X-Tier": ctx.tier.value}
        )

    async def _forward(self, ctx: RequestCtx, cands: list[Candidate]) -> Response:
        path = PATHS[ctx.endpoint]
        for cand in cands:
            try:
                answer = await self._upstream(
                    self.pool.call(cand.upstream, path, self._payload(ctx, cand, False))
                )
            except UpstreamFailure as f:
                ctx.attempts.append(f.attempt)
                continue
            except ClientFault as fault:
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
                    else cls.tokens_for_chars(answer_text_len(ctx.endpoint, data))
                )
                tokens = Tokens(ctx.prompt_est, 0, out, True)
            fp = footprint(ctx, cand, model, tokens)
            self.books.record(ctx, cand, model, tokens, fp)
            return Response(
                answer.body,
                status_code=200,
                media_type="application/json",
                headers=energy_headers(ctx, cand, fp, tokens),
            )
        raise final_error(ctx.attempts)

    async def _stream(self, ctx: RequestCtx, cands: list[Candidate]) -> Response:
        path = PATHS[ctx.endpoint]
        for cand in cands:
            try:
                resp = await self._upstream(
                    self.pool.open_stream(cand.upstream, path, self._payload(ctx, cand, True))
                )
            except UpstreamFailure as f:
                ctx.attempts.append(f.attempt)
                continue
            except ClientFault as fault:
                return self._client_fault(ctx, cand, fault)
            # Headers go out before the body: they carry an estimate (prompt tokens counted from the
            # request, output = max_tokens or routing.default_output_tokens), flagged as such. The receipt
            # and the usage event use the usage of the final chunk (docs/gateway.md, "Streaming").
            est = Tokens(
                ctx.prompt_est, 0, cls.max_output(ctx.body) or self.config.routing.default_output_tokens, True
            )
            headers = energy_headers(ctx, cand, footprint(ctx, cand, cand.model, est), est)
            headers["X-Energy-Basis"] = "stream-estimate"
            headers["Cache-Control"] = "no-cache"
            relay = StreamRelay(self.books, ctx, cand, resp)
            return StreamingResponse(
                relay.run(), status_code=200, media_type="text/event-stream", headers=headers
            )
        raise final_error(ctx.attempts)

    def _payload(self, ctx: RequestCtx, cand: Candidate, stream: bool) -> bytes:
        body = ctx.body
        if body.get("model") != cand.model or (stream and not wants_usage(body)):
            body = dict(body)
            body["model"] = cand.model
            if stream:
                opts = dict(body.get("stream_options") or {})
                opts["include_usage"] = True  # always ask: the usage chunk is what gets booked
                body["stream_options"] = opts
        try:
            return orjson.dumps(body)
        except orjson.JSONEncodeError as exc:  # e.g. nesting orjson cannot write (read_body bounds it)
            raise GatewayError(
                400, f"The request body cannot be forwarded: {exc}.", code="invalid_json"
            ) from None


def _prompt_estimate(endpoint: str, body: dict[str, Any]) -> int:
    """The prompt's token estimate before the upstream counts it (routing and the budget reservation)."""
    if endpoint == "chat":
        return cls.estimate_chat_prompt(body["messages"])
    return cls.estimate_prompt_input(body.get("prompt" if endpoint == "completions" else "input"))
