"""The stream relay: an upstream SSE stream passed on to the client event by event, its usage booked."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from pipelines.gateway import classify as cls
from pipelines.gateway.booking import Books, RequestCtx, Tokens, footprint, usage_tokens
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.routing import Candidate

log = logging.getLogger("joulestream.gateway")


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether the client asked for the usage chunk (`stream_options.include_usage`)."""
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


class StreamRelay:
    """Relays an upstream SSE stream event by event, books the usage of its final chunk, and — when the
    client asked for `stream_options.include_usage` — adds the actual figures to that chunk as a
    `joulestream` object; when it did not, that chunk (which the gateway always requests) is dropped.
    A stream that ends without a usage chunk is booked with estimated tokens."""

    def __init__(self, books: Books, ctx: RequestCtx, cand: Candidate, resp: aiohttp.ClientResponse) -> None:
        self.books, self.ctx, self.cand, self.resp = books, ctx, cand, resp
        self.wants_usage = wants_usage(ctx.body)
        self.tokens: Tokens | None = None
        self.model = cand.model
        self.out_chars = 0
        self.booked = False

    def _book(self) -> dict[str, Any]:
        tokens = self.tokens
        if tokens is None:
            tokens = Tokens(self.ctx.prompt_est, 0, cls.tokens_for_chars(self.out_chars), True)
        fp = footprint(self.ctx, self.cand, self.model, tokens)
        self.books.record(self.ctx, self.cand, self.model, tokens, fp)
        self.booked = True
        return {
            "receipt_id": self.ctx.receipt_id,
            "energy_joules": fp.energy_j,
            "carbon_mg": fp.co2_kg * 1e6,
            "carbon_market_mg": None if fp.co2_kg_market is None else fp.co2_kg_market * 1e6,
            "carbon_embodied_mg": None if fp.co2_kg_embodied is None else fp.co2_kg_embodied * 1e6,
            "water_ml": None if fp.water_l is None else fp.water_l * 1e3,
            "cost_usd_micros": None if fp.cost_usd is None else fp.cost_usd * 1e6,
            "energy_source": fp.energy_source.value,
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
            return self._encode(obj, event)
        if obj.get("choices"):
            obj["usage"] = None
            return self._encode(obj, event)
        return None

    def _encode(self, obj: dict[str, Any], original: bytes) -> bytes:
        try:
            return b"data: " + orjson.dumps(obj) + b"\n\n"
        except orjson.JSONEncodeError:  # an upstream chunk nested deeper than orjson writes: pass it on
            return original

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
