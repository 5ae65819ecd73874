"""The API's request-body limit: a pure ASGI middleware that answers 413 `{"detail": …}` once a request
body is larger than `settings.api_max_body_bytes` (1 MiB unless configured).

A declared `Content-Length` over the limit is refused before a byte is read; otherwise the bytes are
counted as they stream in (a chunked body, or a client that lies about its length), and the request is
refused as soon as the count passes the limit — the body is never read whole. Paths under `exempt` are
left alone: the gateway (`/v1/`), when `joulestream up` mounts it next to the API, has its own limit
(16 MiB) and answers in OpenAI's error shape; the runtime's `/internal/` endpoints take only requests
carrying the runtime token (an operator's own commands: `joulestream reenrich` writes pages of thousands of
events at once).
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body larger than {limit} bytes.")


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ("/v1/", "/internal/")
    ) -> None:
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await self._refuse(scope, send, limit)
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI passes an HTTPException raised while reading the body through to the
                    # app's handler (the `detail` shape); anything else that reads it ends up below
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, send, limit)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, limit: int) -> None:
        body = orjson.dumps({"detail": f"Request body larger than {limit} bytes."})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
