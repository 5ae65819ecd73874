"""The Batch API through the official `openai` SDK against the gateway (stub upstreams, real Tansu, the
batch runner in the gateway's process): upload → create → poll → download, energy headers and signed
receipts per line, exactly one usage event per line, validation errors in OpenAI's shapes, cancellation,
tenancy, and carbon-aware deferral to the cleanest hour of a loaded profile."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import orjson
import pytest

from core.receipts import verify
from pipelines.gateway.batch_format import line_uid
from tests.gateway.conftest import GatewayHandle, read_topic

MODEL = "gemini-2.0-flash"  # served by the stub upstream "small" (europe-west1)
REGION = "europe-west1"


def jsonl(n: int, url: str = "/v1/chat/completions", **extra: Any) -> bytes:
    rows = []
    for i in range(n):
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"question {i}: why is the sky blue?"}],
        }
        rows.append({"custom_id": f"req-{i}", "method": "POST", "url": url, "body": body, **extra})
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def wait_status(client: openai.OpenAI, batch_id: str, statuses: set[str], timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in statuses:
            return b
        assert time.monotonic() < deadline, f"batch stuck in {b.status}"
        time.sleep(0.05)


@pytest.fixture
def clock() -> dict[str, timedelta]:
    return {"offset": timedelta(0)}


@pytest.fixture
def batch_gw(make_gateway, stack, clock) -> GatewayHandle:
    settings = stack.settings.replace(batch_poll_s=0.05, batch_concurrency=4)
    return make_gateway(
        settings=settings,
        batch_runner=True,
        runner_options={"lease_s": 5.0, "clock": lambda: datetime.now(UTC) + clock["offset"]},
    )


def test_sdk_flow_output_receipts_and_one_event_per_line(batch_gw: GatewayHandle) -> None:
    client = batch_gw.client()
    n = 10
    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(n))), purpose="batch")
    assert f.object == "file" and f.purpose == "batch" and f.bytes > 0
    assert client.files.retrieve(f.id).id == f.id
    assert client.files.content(f.id).content == jsonl(n)

    b = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert b.status == "validating" and b.metadata == {"job": "nightly"} and b.request_counts.total == n
    b = wait_status(client, b.id, {"completed", "failed"})
    assert b.status == "completed", b
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (n, n, 0)
    assert b.in_progress_at and b.finalizing_at and b.completed_at and b.error_file_id is None
    assert b.output_file_id

    out = [orjson.loads(x) for x in client.files.content(b.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"req-{i}" for i in range(n))
    receipts = set()
    for o in out:
        uid = line_uid(b.id, o["custom_id"])
        r = o["response"]
        assert r["status_code"] == 200 and r["body"]["object"] == "chat.completion"
        h = r["headers"]
        assert float(h["x-energy-joules"]) > 0 and float(h["x-carbon-mg"]) > 0
        assert h["x-receipt-id"] == f"rcpt_{uid.hex}" == o["joulestream"]["receipt_id"]
        assert o["id"] == f"batch_req_{uid.hex}" and o["error"] is None
        assert (
            o["joulestream"]["energy_j"] == float(h["x-energy-joules"])
            and o["joulestream"]["region"] == REGION
        )
        receipts.add(h["x-receipt-id"])
    assert len(receipts) == n

    # each line's receipt is signed and stored; its figures are the line's
    pk = batch_gw.http("GET", "/v1/receipts/public-key", key=None).json()
    for o in out[:3]:
        rec = batch_gw.http("GET", f"/v1/receipts/{o['joulestream']['receipt_id']}").json()
        assert rec["payload"]["energy_j"] == pytest.approx(o["joulestream"]["energy_j"], rel=1e-6)
        assert rec["payload"]["event_id"] == str(line_uid(b.id, o["custom_id"]))
        signed = {k: rec[k] for k in ("payload", "key_version", "sha256", "signature")}
        assert verify(signed, {pk["key_version"]: pk["public_key"]})

    # exactly one usage event per line, under the line's deterministic id
    events = read_topic(batch_gw.stack.settings.kafka, batch_gw.stack.settings.raw_topic, n)
    assert sorted(m.key.decode() for m in events) == sorted(str(line_uid(b.id, f"req-{i}")) for i in range(n))
    labels = [orjson.loads(m.value)["labels"] for m in events]
    assert {x["batch_id"] for x in labels} == {b.id} and {x["custom_id"] for x in labels} == {
        f"req-{i}" for i in range(n)
    }

    page = client.batches.list(limit=1)
    assert [x.id for x in page.data] == [b.id]
    assert client.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_validation_errors_in_openai_shape(batch_gw: GatewayHandle) -> None:
    client = batch_gw.client()
    dup = jsonl(2).replace(b"req-1", b"req-0")
    cases = [
        (dup, "duplicate_custom_id", "Line 2"),
        (b'{"custom_id": "a", "method": "POST"\n', "invalid_jsonl", "Line 1: not valid JSON"),
        (jsonl(1).replace(b'"POST"', b'"GET"'), "invalid_jsonl", "method"),
        (jsonl(1, url="/v1/images"), "invalid_jsonl", "url must be one of"),
        (b"\n\n", "empty_file", "no requests"),
    ]
    for data, code, fragment in cases:
        with pytest.raises(openai.BadRequestError) as exc:
            client.files.create(file=("x.jsonl", io.BytesIO(data)), purpose="batch")
        err = exc.value.body
        assert err["code"] == code and fragment in err["message"] and err["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("x.jsonl", io.BytesIO(jsonl(1))), purpose="fine-tune")
    assert exc.value.body["param"] == "purpose"

    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(1))), purpose="batch")
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="48h")  # type: ignore[arg-type]
    assert exc.value.body["param"] == "completion_window"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )

    # the lines' url must be the batch's endpoint: the batch fails in validation, with the line numbers
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    b = wait_status(client, b.id, {"failed", "completed"})
    assert b.status == "failed" and b.failed_at and b.errors and b.errors.data[0].line == 1
    assert b.errors.data[0].code == "invalid_url"


def test_limits_on_lines_and_bytes(make_gateway, stack) -> None:
    small = make_gateway(settings=stack.settings.replace(batch_max_lines=3, batch_max_file_bytes=2000))
    sc = small.client()
    with pytest.raises(openai.BadRequestError) as exc:
        sc.files.create(file=("x.jsonl", io.BytesIO(jsonl(4))), purpose="batch")
    assert exc.value.body["code"] == "too_many_requests_in_file"
    with pytest.raises(openai.APIStatusError) as exc:
        sc.files.create(file=("x.jsonl", io.BytesIO(jsonl(3) + b" " * 3000)), purpose="batch")
    assert exc.value.status_code == 413 and exc.value.body["code"] == "file_too_large"


def test_tenancy_and_scopes(batch_gw: GatewayHandle) -> None:
    a = batch_gw.client()
    f = a.files.create(file=("in.jsonl", io.BytesIO(jsonl(2))), purpose="batch")
    b = a.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    other = batch_gw.client(batch_gw.tenants.key_b)
    for call in (
        lambda: other.files.retrieve(f.id),
        lambda: other.files.content(f.id),
        lambda: other.batches.retrieve(b.id),
        lambda: other.batches.cancel(b.id),
        lambda: other.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert other.batches.list().data == []
    reader = batch_gw.client(batch_gw.tenants.key_a_read)
    assert reader.batches.retrieve(b.id).id == b.id
    with pytest.raises(openai.PermissionDeniedError):
        reader.files.create(file=("in.jsonl", io.BytesIO(jsonl(1))), purpose="batch")
    wait_status(a, b.id, {"completed"})


def test_cancel_mid_run(batch_gw: GatewayHandle, fresh_stubs) -> None:
    fresh_stubs.config("small", delay_s=0.05)
    client = batch_gw.client()
    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(40))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 30
    while client.batches.retrieve(b.id).request_counts.completed < 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    c = client.batches.cancel(b.id)
    assert c.status in ("cancelling", "cancelled") and c.cancelling_at
    b = wait_status(client, b.id, {"cancelled"})
    done = b.request_counts.completed
    assert 4 <= done < 40 and b.cancelled_at and b.completed_at is None
    out = client.files.content(b.output_file_id).text.splitlines()
    assert len(out) == done
    with pytest.raises(openai.ConflictError):  # a finished batch cannot be cancelled
        f2 = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(1))), purpose="batch")
        b2 = client.batches.create(
            input_file_id=f2.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        wait_status(client, b2.id, {"completed"})
        client.batches.cancel(b2.id)


def test_carbon_aware_deferral_to_the_cleanest_hour(batch_gw: GatewayHandle, clock, fresh_stubs) -> None:
    now = datetime.now(UTC)
    clean, cleanest = (now + timedelta(hours=1)).hour, (now + timedelta(hours=5)).hour
    hours = [0.40] * 24
    hours[clean], hours[cleanest] = 0.20, 0.05
    if (now + timedelta(hours=23)).hour not in (clean, cleanest):
        hours[(now + timedelta(hours=23)).hour] = 0.01  # cleaner, but past the window's finish margin
    csv = "region,hour_utc,intensity_kg_per_kwh\n" + "".join(
        f"{REGION},{h},{v}\n" for h, v in enumerate(hours)
    )
    admin = batch_gw.tenants.new_key(batch_gw.tenants.org_a.id, "admin")
    r = batch_gw.http(
        "PUT", "/v1/intensity-profiles", key=admin, content=csv, headers={"content-type": "text/csv"}
    )
    assert r.status_code == 200 and r.json()["loaded_regions"] == 1, r.text
    bad = batch_gw.http(
        "PUT", "/v1/intensity-profiles", key=admin, content="region,hour_utc,intensity_kg_per_kwh\nx,1,350\n"
    )
    assert bad.status_code == 400 and "g/kWh" in bad.json()["error"]["message"]
    assert batch_gw.http("PUT", "/v1/intensity-profiles", content=csv).status_code == 403  # ingest key

    client = batch_gw.client()
    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(6))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = wait_status(client, b.id, {"in_progress"})
    carbon = b.model_extra["carbon"]
    start = (now + timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    assert carbon["region"] == REGION and carbon["profile"] is True
    assert datetime.fromisoformat(carbon["deferred_until"]) == start
    assert carbon["intensity_planned_kg_per_kwh"] == 0.05 and carbon["intensity_immediate_kg_per_kwh"] == 0.40
    time.sleep(0.5)  # the runner polls; the deferred batch must not start
    assert fresh_stubs.requests("small") == 0 and client.batches.retrieve(b.id).request_counts.completed == 0

    clock["offset"] = start - now + timedelta(minutes=1)  # the cleanest hour has come
    b = wait_status(client, b.id, {"completed"})
    assert fresh_stubs.requests("small") == 6
    carbon = b.model_extra["carbon"]
    out = [orjson.loads(x) for x in client.files.content(b.output_file_id).text.splitlines()]
    energy = sum(o["joulestream"]["energy_j"] for o in out)
    assert carbon["energy_j"] == pytest.approx(energy)
    assert carbon["co2e_kg_immediate"] == pytest.approx(energy / 3.6e6 * 0.40)
    assert carbon["co2e_kg_scheduled"] == pytest.approx(energy / 3.6e6 * 0.05)
    assert carbon["co2e_kg_saved"] == pytest.approx(energy / 3.6e6 * 0.35)


def test_no_profile_runs_at_once(batch_gw: GatewayHandle) -> None:
    client = batch_gw.client()
    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(2))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = wait_status(client, b.id, {"completed"})
    carbon = b.model_extra["carbon"]
    assert carbon["profile"] is False and carbon["deferred_until"] is None and carbon["co2e_kg_saved"] is None


def test_expired_window_lines_go_to_the_error_file(batch_gw: GatewayHandle, clock, fresh_stubs) -> None:
    now = datetime.now(UTC)
    hours = [0.4] * 24
    hours[(now + timedelta(hours=4)).hour] = 0.01  # defer the batch by some hours ...
    csv = "region,hour_utc,intensity_kg_per_kwh\n" + "".join(
        f"{REGION},{h},{v}\n" for h, v in enumerate(hours)
    )
    admin = batch_gw.tenants.new_key(batch_gw.tenants.org_a.id, "admin")
    assert batch_gw.http("PUT", "/v1/intensity-profiles", key=admin, content=csv).status_code == 200
    client = batch_gw.client()
    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(3))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_status(client, b.id, {"in_progress"})
    clock["offset"] = timedelta(hours=25)  # ... and let the whole window pass
    b = wait_status(client, b.id, {"expired"})
    assert b.expired_at and b.output_file_id is None and b.request_counts.failed == 3
    errs = [orjson.loads(x) for x in client.files.content(b.error_file_id).text.splitlines()]
    assert {e["error"]["code"] for e in errs} == {"batch_expired"} and all(
        e["response"] is None for e in errs
    )
    assert fresh_stubs.requests("small") == 0


def test_hostile_requests_get_openai_shaped_4xx(batch_gw: GatewayHandle) -> None:
    cases = [
        ("POST", "/v1/files", {"json": {"purpose": "batch"}}, 400),
        (
            "POST",
            "/v1/files",
            {"content": b"--x\r\ngarbage", "headers": {"content-type": "multipart/form-data; boundary=x"}},
            400,
        ),
        ("POST", "/v1/files", {"data": {"purpose": "batch"}, "files": {"other": ("a", b"x")}}, 400),
        ("POST", "/v1/batches", {"content": b"{not json"}, 422),
        (
            "POST",
            "/v1/batches",
            {
                "json": {
                    "input_file_id": "f",
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                    "metadata": {str(i): "v" for i in range(17)},
                }
            },
            422,
        ),
        ("GET", "/v1/batches?limit=0", {}, 400),
        ("GET", "/v1/batches?limit=abc", {}, 422),
        ("GET", "/v1/batches/batch_nope", {}, 404),
        ("GET", "/v1/files/../../etc/passwd/content", {}, 404),
        ("POST", "/v1/batches/batch_nope/cancel", {}, 404),
    ]
    for method, path, kw, status in cases:
        r = batch_gw.http(method, path, **kw)
        assert r.status_code == status, (path, r.status_code, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
    assert batch_gw.http("GET", "/v1/batches", key=None).status_code == 401
    assert batch_gw.http("GET", "/v1/openapi.json", key=None).json()["paths"]["/v1/batches"]
