"""The Batch API's formats (OpenAI's): the input JSONL and its validation, the file and batch objects, and
the output/error file lines. Shared by the HTTP routes (`batches.py`) and the runner (`batch_runner.py`).

Input line:  {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
Output line: {"id": "batch_req_…", "custom_id": "r1", "response": {"status_code": 200, "request_id": "…",
              "body": {...}, "headers": {"X-Energy-Joules": …, "X-Receipt-Id": …, …}}, "error": null,
              "joulestream": {"energy_j", "carbon_mg", "receipt_id", "routed_to", "tier", "region"}}
A line the gateway answered with an error goes to the error file with the same shape (`response.body` is the
OpenAI error object); a line that never ran (batch expired or cancelled) has `response: null` and `error`.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controlplane.batches import Batch, BatchFile
from pipelines.gateway.errors import GatewayError

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings", "/v1/completions": "completions"}


class InputLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(min_length=1, max_length=512)
    method: str = Field(pattern="^POST$")
    url: str
    body: dict[str, Any]


class ParsedLine(BaseModel):
    line_no: int  # 1-based
    custom_id: str
    url: str
    body: dict[str, Any]


def _bad(line_no: int, message: str, code: str = "invalid_jsonl") -> GatewayError:
    return GatewayError(400, f"Line {line_no}: {message}", param="file", code=code)


def parse_jsonl(data: bytes, max_lines: int) -> list[ParsedLine]:
    """Validate a batch input file: one JSON object a line with `custom_id` (unique), `method` POST, `url`
    one of the batch endpoints and an object `body` (without `stream`). GatewayError 400 naming the line."""
    out: list[ParsedLine] = []
    seen: set[str] = set()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise GatewayError(400, "The file is not UTF-8 text.", param="file", code="invalid_jsonl") from None
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(out) >= max_lines:
            raise GatewayError(
                400,
                f"The file has more than {max_lines} requests (the limit per batch).",
                param="file",
                code="too_many_requests_in_file",
            )
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _bad(n, "not valid JSON.") from None
        if not isinstance(obj, dict):
            raise _bad(n, "each line must be a JSON object.")
        try:
            line = InputLine.model_validate(obj)
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(p) for p in e.get("loc", ())) or "line"
            raise _bad(n, f"{where}: {e.get('msg', 'invalid')}.") from None
        if line.url not in ENDPOINTS:
            raise _bad(n, f"url must be one of {', '.join(ENDPOINTS)}, got {line.url[:100]!r}.")
        if line.body.get("stream"):
            raise _bad(n, "body.stream is not supported in a batch.")
        if not isinstance(line.body.get("model"), str):
            raise _bad(n, "body.model is required.")
        if line.custom_id in seen:
            raise _bad(
                n, f"custom_id {line.custom_id[:100]!r} is used more than once.", "duplicate_custom_id"
            )
        seen.add(line.custom_id)
        out.append(ParsedLine(line_no=n, custom_id=line.custom_id, url=line.url, body=line.body))
    if not out:
        raise GatewayError(400, "The file holds no requests.", param="file", code="empty_file")
    return out


def line_uid(batch_id: str, custom_id: str) -> uuid.UUID:
    """The line's deterministic id (RFC 9562 version 8, from SHA-256 of batch and custom_id): its usage
    event id, and as hex its receipt id — a re-run of the line books the same event and receipt."""
    d = bytearray(hashlib.sha256(f"{batch_id}\x00{custom_id}".encode()).digest()[:16])
    d[6] = (d[6] & 0x0F) | 0x80
    d[8] = (d[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(d))


def _ts(dt: datetime | None) -> int | None:
    return None if dt is None else int(dt.timestamp())


def file_object(f: BatchFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": _ts(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def batch_object(b: Batch) -> dict[str, Any]:
    errors = orjson.loads(b.errors) if b.errors else None
    return {
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "errors": None if errors is None else {"object": "list", "data": errors},
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": b.status,
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": _ts(b.created_at),
        "in_progress_at": _ts(b.in_progress_at),
        "expires_at": _ts(b.expires_at),
        "finalizing_at": _ts(b.finalizing_at),
        "completed_at": _ts(b.completed_at),
        "failed_at": _ts(b.failed_at),
        "expired_at": _ts(b.expired_at),
        "cancelling_at": _ts(b.cancelling_at),
        "cancelled_at": _ts(b.cancelled_at),
        "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
        "metadata": b.metadata_dict,
        "carbon": b.carbon_dict,  # joulestream: the schedule and its CO2e versus running at once
    }


ENERGY_HEADERS = (
    "x-request-id",
    "x-energy-joules",
    "x-carbon-mg",
    "x-routed-to",
    "x-tier",
    "x-receipt-id",
    "x-tokens-estimated",
    "x-energy-estimated",
    "x-factors-version",
    "x-energy-source",
    "x-carbon-market-mg",
    "x-carbon-embodied-mg",
    "x-water-ml",
    "x-cost-usd",
)


def output_line(
    uid: uuid.UUID, custom_id: str, status: int, headers: dict[str, str], body: bytes, region: str | None
) -> dict[str, Any]:
    """An output (2xx) or error (other status) file line for an answered request."""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = {"error": {"message": "the upstream answer was not JSON", "type": "api_error"}}
    kept = {k: v for k, v in headers.items() if k.lower() in ENERGY_HEADERS}
    energy = float(headers.get("x-energy-joules", 0) or 0)
    carbon = float(headers.get("x-carbon-mg", 0) or 0)
    return {
        "id": f"batch_req_{uid.hex}",
        "custom_id": custom_id,
        "response": {
            "status_code": status,
            "request_id": headers.get("x-request-id"),
            "body": parsed,
            "headers": kept,
        },
        "error": None,
        "joulestream": {
            "energy_j": energy,
            "carbon_mg": carbon,
            "receipt_id": headers.get("x-receipt-id"),
            "routed_to": headers.get("x-routed-to"),
            "tier": headers.get("x-tier"),
            "region": region,
        }
        if 200 <= status < 300
        else None,
    }


def unrun_line(uid: uuid.UUID, custom_id: str, code: str, message: str) -> dict[str, Any]:
    """An error file line for a request that never ran (`batch_expired`, `batch_cancelled`)."""
    return {
        "id": f"batch_req_{uid.hex}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
