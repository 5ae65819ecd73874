"""Request bodies accepted at the boundary (pydantic, strict types, unknown OpenAI parameters allowed and
forwarded untouched). Only what the gateway relies on is checked; the upstream validates the rest.
`read_body` reads the JSON object body: sent as JSON (a `Content-Type` other than application/json or
*+json is refused with 415, as OpenAI does; none at all is taken as JSON), within MAX_BODY_BYTES, and
nested at most MAX_JSON_DEPTH levels (400: a deeper body could not be forwarded — orjson writes at most
254 levels — and no OpenAI request needs a tenth of it)."""

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
MAX_JSON_DEPTH = 200  # objects/arrays inside one another, the body itself counted


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
            first = loc[:200]
        parts.append(f"{loc[:200] or 'body'}: {err['msg'][:300]}")
    return "Invalid request body: " + "; ".join(parts), first


def _too_deep(value: Any, limit: int) -> bool:
    """Whether `value` nests more than `limit` containers deep (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        for child in v.values() if isinstance(v, dict) else v:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _check_content_type(ctype: str | None) -> None:
    if ctype is None:
        return  # curl without -H, some SDKs: the body is parsed as JSON all the same
    media = ctype.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    shown = ctype[:100]
    raise GatewayError(
        415,
        f"Unsupported content type: {shown!r}. This API method only accepts 'application/json' requests, "
        f"but you specified the header 'Content-Type: {shown}'. Please try again with a supported content "
        "type.",
        code="unsupported_content_type",
    )


async def read_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body (415 when not sent as JSON, 413 above MAX_BODY_BYTES, 400 when not
    a JSON object or nested deeper than MAX_JSON_DEPTH)."""
    _check_content_type(request.headers.get("content-type"))
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
    # cheap bound first: fewer opening brackets than the limit cannot nest deeper than it
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _too_deep(body, MAX_JSON_DEPTH):
        raise GatewayError(
            400,
            f"The request body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep.",
            code="invalid_json",
        )
    return body
