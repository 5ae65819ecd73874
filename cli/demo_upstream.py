"""A local OpenAI-compatible upstream for tests, benchmarks and demos (a plain ASGI app, no framework).

It answers the documented OpenAI shapes — chat completions (plain and SSE streaming, with
`stream_options.include_usage`), legacy completions, embeddings (float or base64) and the model list —
with usage that includes `prompt_tokens_details.cached_tokens`. Behaviour is set per instance and can be
changed at run time through `POST /_stub/config` (JSON, any of the `StubConfig` fields); `GET /_stub/stats`
returns request counts and the last request body seen.

    python -m cli.demo_upstream --port 9001 --name a
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

Scope = dict[str, Any]


@dataclass
class StubConfig:
    name: str = "stub"
    reply: str = "Hello from the stub upstream."
    fail: str | None = None  # None | "500" | "502" | "503" | "429" | "400" | "401" | "garbage"
    fail_times: int = -1  # with `fail`: fail this many requests then recover (-1 = always)
    cached_tokens: int = 0  # reported in usage.prompt_tokens_details.cached_tokens (≤ prompt tokens)
    reasoning_tokens: int = 0
    audio_tokens: int = 0  # usage.prompt_tokens_details.audio_tokens (part of the prompt tokens)
    output_audio_tokens: int = (
        0  # usage.completion_tokens_details.audio_tokens (part of the completion tokens)
    )
    omit_usage: bool = False  # answer without a usage object (the gateway must estimate)
    delay_s: float = 0.0  # before answering
    stream_chunk_delay_s: float = 0.0
    require_key: str | None = None  # expect `Authorization: Bearer <key>`, else 401
    embedding_dims: int = 8
    fixed_prompt_tokens: int | None = None  # report this instead of the ~4 chars/token count


@dataclass
class StubStats:
    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    last_body: Any = None
    last_auth: str | None = None


def _count_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _chat_prompt_tokens(messages: list[Any]) -> int:
    n = 3
    for m in messages:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, list):
            c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
        n += 4 + _count_tokens(c or "")
    return n


class StubUpstream:
    """The ASGI app. `config` may be mutated directly by in-process tests."""

    def __init__(self, config: StubConfig | None = None) -> None:
        self.config = config or StubConfig()
        self.stats = StubStats()
        self._seq = 0

    # ------------------------------------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        if path == "/_stub/config" and method == "POST":
            for k, v in orjson.loads(body or b"{}").items():
                if hasattr(self.config, k):
                    setattr(self.config, k, v)
            await self._json(send, 200, asdict(self.config))
            return
        if path == "/_stub/stats":
            await self._json(send, 200, asdict(self.stats))
            return
        if path == "/_stub/reset" and method == "POST":
            self.stats = StubStats()
            await self._json(send, 200, {"ok": True})
            return

        self.stats.requests += 1
        self.stats.by_path[path] = self.stats.by_path.get(path, 0) + 1
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        self.stats.last_auth = auth
        cfg = self.config
        if cfg.require_key is not None and auth != f"Bearer {cfg.require_key}":
            await self._error(
                send, 401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key"
            )
            return
        if cfg.delay_s:
            await asyncio.sleep(cfg.delay_s)
        if cfg.fail and cfg.fail_times != 0:
            if cfg.fail_times > 0:
                cfg.fail_times -= 1
            await self._fail(send, cfg.fail)
            return
        try:
            req = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            await self._error(
                send, 400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
            return
        self.stats.last_body = req
        if path == "/v1/chat/completions" and method == "POST":
            await self._chat(send, req)
        elif path == "/v1/completions" and method == "POST":
            await self._completion(send, req)
        elif path == "/v1/embeddings" and method == "POST":
            await self._embeddings(send, req)
        elif path == "/v1/models" and method == "GET":
            await self._json(
                send,
                200,
                {
                    "object": "list",
                    "data": [{"id": "stub-model", "object": "model", "created": 0, "owned_by": cfg.name}],
                },
            )
        else:
            await self._error(send, 404, f"Unknown path {path}", "invalid_request_error")

    # ------------------------------------------------------------------------------------------ answers
    def _usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any] | None:
        cfg = self.config
        if cfg.omit_usage:
            return None
        if cfg.fixed_prompt_tokens is not None:
            prompt_tokens = cfg.fixed_prompt_tokens
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {
                "cached_tokens": min(cfg.cached_tokens, prompt_tokens),
                "audio_tokens": min(cfg.audio_tokens, prompt_tokens),
            },
            "completion_tokens_details": {
                "reasoning_tokens": cfg.reasoning_tokens,
                "audio_tokens": min(cfg.output_audio_tokens, completion_tokens),
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self.config.name}-{self._seq}"

    def _reply(self, req: dict[str, Any]) -> tuple[str, int]:
        text = self.config.reply
        limit = req.get("max_completion_tokens") or req.get("max_tokens")
        words = text.split(" ")
        if isinstance(limit, int) and limit > 0 and len(words) > limit:
            words = words[:limit]
        text = " ".join(words)
        return text, _count_tokens(text) + self.config.reasoning_tokens

    async def _chat(self, send: Any, req: dict[str, Any]) -> None:
        model = req.get("model", "stub-model")
        prompt_tokens = _chat_prompt_tokens(req.get("messages") or [])
        text, completion_tokens = self._reply(req)
        created = int(time.time())
        cid = self._next_id("chatcmpl")
        usage = self._usage(prompt_tokens, completion_tokens)
        if req.get("stream"):
            include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
            await self._sse(send, cid, created, model, text, usage if include_usage else None)
            return
        body: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": f"fp_{self.config.name}",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "service_tier": "default",
        }
        if usage is not None:
            body["usage"] = usage
        await self._json(send, 200, body)

    async def _sse(
        self, send: Any, cid: str, created: int, model: str, text: str, usage: dict[str, Any] | None
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )

        def chunk(delta: dict[str, Any], finish: str | None, with_usage: bool = False) -> bytes:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": f"fp_{self.config.name}",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if usage is not None:
                c["usage"] = None
            return b"data: " + orjson.dumps(c) + b"\n\n"

        parts = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
        words = text.split(" ")
        for i, w in enumerate(words):
            parts.append(chunk({"content": w if i == 0 else " " + w}, None))
        parts.append(chunk({}, "stop"))
        if usage is not None:
            final = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": f"fp_{self.config.name}",
                "choices": [],
                "usage": usage,
            }
            parts.append(b"data: " + orjson.dumps(final) + b"\n\n")
        parts.append(b"data: [DONE]\n\n")
        for p in parts:
            if self.config.stream_chunk_delay_s:
                await asyncio.sleep(self.config.stream_chunk_delay_s)
            await send({"type": "http.response.body", "body": p, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _completion(self, send: Any, req: dict[str, Any]) -> None:
        prompt = req.get("prompt", "")
        if isinstance(prompt, list):
            prompt_tokens = sum(
                len(p) if isinstance(p, list) else (1 if isinstance(p, int) else _count_tokens(str(p)))
                for p in prompt
            )
        else:
            prompt_tokens = _count_tokens(str(prompt))
        text, completion_tokens = self._reply(req)
        body: dict[str, Any] = {
            "id": self._next_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.get("model", "stub-model"),
            "system_fingerprint": f"fp_{self.config.name}",
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        }
        usage = self._usage(prompt_tokens, completion_tokens)
        if usage is not None:
            body["usage"] = usage
        await self._json(send, 200, body)

    async def _embeddings(self, send: Any, req: dict[str, Any]) -> None:
        inp = req.get("input", "")
        items = inp if isinstance(inp, list) and inp and not isinstance(inp[0], int) else [inp]
        dims = req.get("dimensions") or self.config.embedding_dims
        b64 = req.get("encoding_format") == "base64"
        data = []
        tokens = 0
        for i, item in enumerate(items):
            tokens += len(item) if isinstance(item, list) else _count_tokens(str(item))
            vec = [((hash((str(item), j)) % 2000) - 1000) / 1000.0 for j in range(dims)]
            emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        body: dict[str, Any] = {"object": "list", "data": data, "model": req.get("model", "stub-embed")}
        if not self.config.omit_usage:
            body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        await self._json(send, 200, body)

    async def _fail(self, send: Any, mode: str) -> None:
        if mode == "garbage":
            await self._raw(send, 200, b"<html>not json</html>", b"text/html")
            return
        status = int(mode)
        etype = {429: "rate_limit_exceeded", 401: "invalid_request_error", 400: "invalid_request_error"}.get(
            status, "server_error"
        )
        await self._error(send, status, f"stub {self.config.name} failing with {status}", etype)

    # ------------------------------------------------------------------------------------------ plumbing
    async def _error(self, send: Any, status: int, message: str, etype: str, code: str | None = None) -> None:
        await self._json(
            send, status, {"error": {"message": message, "type": etype, "param": None, "code": code}}
        )

    async def _json(self, send: Any, status: int, obj: Any) -> None:
        await self._raw(send, status, orjson.dumps(obj), b"application/json")

    @staticmethod
    async def _raw(send: Any, status: int, body: bytes, ctype: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--name", default="stub")
    ap.add_argument("--cached-tokens", type=int, default=0)
    args = ap.parse_args()
    import uvicorn

    app = StubUpstream(StubConfig(name=args.name, cached_tokens=args.cached_tokens))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
