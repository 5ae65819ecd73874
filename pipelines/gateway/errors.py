"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

| status | type                   | when                                                            |
|--------|------------------------|-----------------------------------------------------------------|
| 400    | invalid_request_error  | body is not JSON / not an object; model not on this endpoint     |
| 401    | authentication_error   | no / unknown / revoked / expired API key                         |
| 403    | permission_error       | the key lacks the `ingest` scope                                 |
| 404    | invalid_request_error  | unknown model, unknown receipt (or another org's), unknown path  |
| 422    | invalid_request_error  | body fields fail validation (`param` = the first bad field)      |
| 429    | rate_limit_error       | request-rate or token budget exceeded (with Retry-After)         |
| 402    | insufficient_balance   | the org's prepaid balance is empty                               |
| 502    | api_error              | every capable upstream failed, at least one with a bad answer    |
| 503    | api_error              | no upstream reachable / capable, or the usage spool is full      |
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, extra_headers: dict[str, str] | None = None) -> Response:
        headers = {**self.headers, **(extra_headers or {})}
        return Response(
            orjson.dumps(self.body()), status_code=self.status, headers=headers, media_type="application/json"
        )


def unauthorized(message: str) -> GatewayError:
    return GatewayError(
        401,
        message,
        type="authentication_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )
