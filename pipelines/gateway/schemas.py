"""Request bodies accepted at the boundary (pydantic, strict types, unknown OpenAI parameters allowed and
forwarded untouched). Only what the gateway relies on is checked; the upstream validates the rest.
`read_body` reads the JSON object body, within MAX_BODY_BYTES."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.gateway.errors import GatewayError

ModelName = Annotated[str, Field(min_length=1, max_length=200)]
PositiveInt = Annotated[int, Field(ge=1, le=10_000_000)]
TokenIds = list[Annotated[int, Field(ge=0)]]
MAX_BODY_BYTES = 16 << 20


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Body):
    include_usage: bool | None = None


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Body):
    model: ModelName
    messages: list[ChatMessage] = Field(min_length=1, max_length=100_000)
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Body):
    model: ModelName
    prompt: str | list[str] | TokenIds | list[TokenIds]
    max_tokens: PositiveInt | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None


class EmbeddingRequest(_Body):
    model: ModelName
    input: str | list[str] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PositiveInt | None = None


MODELS: dict[str, type[_Body]] = {
    "chat": ChatRequest,
    "completions": CompletionRequest,
    "embeddings": EmbeddingRequest,
}


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "constrained-int", "constrained-str"}


def _is_type_tag(p: object) -> bool:
    """pydantic puts the union member's type in error locations ("str", "list[int]"): not a field."""
    return isinstance(p, str) and (p in _TYPE_TAGS or "[" in p or p[:1].isupper())


def describe_errors(exc: ValidationError) -> tuple[str, str | None]:
    """(message, param) for a 422: every problem in the message, the first bad field as `param`."""
    parts = []
    first: str | None = None
    for err in exc.errors(include_url=False)[:10]:
        loc = ".".join(str(p) for p in err["loc"] if not _is_type_tag(p))
        if first is None and loc:
            first = loc
        parts.append(f"{loc or 'body'}: {err['msg']}")
    return "Invalid request body: " + "; ".join(parts), first


async def read_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body (413 above MAX_BODY_BYTES, 400 when not a JSON object)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise GatewayError(413, f"Request body larger than {MAX_BODY_BYTES} bytes.", code="body_too_large")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise GatewayError(413, f"Request body larger than {MAX_BODY_BYTES} bytes.", code="body_too_large")
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
