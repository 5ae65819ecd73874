"""Hypothesis strategies for hostile request bodies (issue 20's acceptance fuzz:
tests/api/test_api_fuzz_hostile.py, tests/gateway/test_gateway_fuzz_hostile.py):
a valid-looking body of the route with one field — or the whole body — replaced by something hostile:
nesting thousands of levels deep, strings past the body limit, NUL characters and bytes, invalid UTF-8,
JSON that Python or orjson read differently (NaN, huge numbers, lone surrogates), plain garbage; sent
under a JSON or a wrong content type.

`check_rejection` is the shared oracle: never a 5xx; a rejection is in the route's error shape and small.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

MAX_EXAMPLES = int(os.environ.get("JOULESTREAM_FUZZ_EXAMPLES", "50"))
MAX_REJECTION_BYTES = 4096  # "a few KB" for any rejected body, however large the body was

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure is reproducible
    suppress_health_check=list(HealthCheck),
    database=None,
)

WRONG_CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/octet-stream",
        "application/xml",
        "text/json",
    ]
)
# JSON (or no content type at all) two times in three: most examples reach the body parsing
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [None, "application/json", "application/json; charset=utf-8", "application/vnd.api+json"]
    ),
    st.sampled_from([None, "application/json"]),
    WRONG_CONTENT_TYPES,
)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)

ODD_JSON = [
    b"NaN",
    b"-Infinity",
    b"1e999999",
    b"9" * 5000,  # beyond Python's int-to-str digit limit
    b'"\\ud800"',  # a lone surrogate
    b'"\\u0000"',
    b"[1,]",
    b'{"a" 1}',
    b"",
    b"\x00",
    b'"' + b"\\" * 3,
]


def nested(depth: int, kind: str) -> bytes:
    if kind == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def hostile_fragment(draw: Any, limit: int) -> bytes:
    """One JSON text fragment (not always valid JSON) meant to hurt."""
    kind = draw(st.sampled_from(["deep", "huge", "nul", "utf8", "odd", "json"]))
    if kind == "deep":
        depth = draw(
            st.one_of(st.integers(1, 300), st.sampled_from([199, 200, 201, 254, 255, 1024, 1025, 5000]))
        )
        return nested(depth, draw(st.sampled_from(["[", "{"])))
    if kind == "huge":
        size = draw(st.sampled_from([5_000, 100_000, limit - 64, limit + 1]))
        return b'"' + draw(st.sampled_from([b"x", b"\xc3\xa9", b"\\u0000"])) * (size // 3 + 1) + b'"'
    if kind == "nul":
        text = draw(st.text(max_size=20))
        return orjson.dumps(text + "\x00" + text)[: None if draw(st.booleans()) else -1].replace(
            b"\\u0000", b"\x00"
        )
    if kind == "utf8":
        raw = draw(st.binary(min_size=1, max_size=24))
        return b'"' + raw.replace(b'"', b"") + b"\xff\xfe" + b'"'
    if kind == "odd":
        return draw(st.sampled_from(ODD_JSON))
    return orjson.dumps(draw(JSON_VALUES))


@st.composite
def hostile_body(draw: Any, template: dict[str, Any], limit: int) -> bytes:
    """`template` (the route's valid-looking body) with one field, a new field, or the whole body hostile."""
    where = draw(st.sampled_from([None, *template, "zz_extra"]))
    fragment = draw(hostile_fragment(limit))
    if where is None:
        return fragment
    parts = {k: orjson.dumps(v) for k, v in template.items()}
    parts[where] = fragment
    return b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in parts.items()) + b"}"


def explicit_cases(template: dict[str, Any], limit: int) -> list[tuple[bytes, str | None]]:
    """The cases every route gets whatever Hypothesis draws: each kind of hostile body at each field."""
    fragments = [
        nested(254, "{"),  # the depth the probe found answered 503
        nested(1025, "["),  # past orjson's reader
        nested(5000, "{"),
        b'"' + b"x" * (limit + 1) + b'"',  # past the body limit
        b'"a\\u0000b\\u0000"',
        b'"a\x00b"',
        b'"\xff\xfe\xfd"',
        b'"\\ud800 lone surrogate"',
        b"1e999999",
        b"9" * 5000,
    ]
    cases: list[tuple[bytes, str | None]] = []
    for i, fragment in enumerate(fragments):
        fields = [*template, None] if i < 3 else [next(iter(template)), None]
        for field in fields:
            parts = {k: orjson.dumps(v) for k, v in template.items()}
            if field is None:
                cases.append((fragment, "application/json"))
                continue
            parts[field] = fragment
            cases.append(
                (b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in parts.items()) + b"}", None)
            )
    valid = orjson.dumps(template)
    cases += [
        (valid, ct) for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
    ]
    return cases


def check_rejection(status: int, content: bytes, shape: str) -> None:
    """No 5xx; any 4xx is `shape` ("openai": {"error": {message, type, param, code}}; "detail":
    {"detail": …}) in at most MAX_REJECTION_BYTES."""
    assert status < 500, (status, content[:500])
    if status < 400:
        return
    assert len(content) <= MAX_REJECTION_BYTES, (status, len(content), content[:300])
    body = orjson.loads(content)
    if shape == "openai":
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    else:
        assert "detail" in body, body
