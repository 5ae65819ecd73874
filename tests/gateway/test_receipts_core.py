"""core.receipts: RFC 8785 canonical JSON, Ed25519 signing / verification, versioned keys."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import pytest
from nacl.signing import SigningKey, VerifyKey

from core.receipts import (
    CanonicalJsonError,
    Keyring,
    SignedRecord,
    canonical_json,
    key_version_of,
    sign,
    verify,
)
from core.settings import load_settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (100.0, "100"),
        (0.5, "0.5"),
        (1e-7, "1e-7"),
        (0.00001, "0.00001"),
        (123.456, "123.456"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (5e-324, "5e-324"),
        (-1.7976931348623157e308, "-1.7976931348623157e+308"),
        (333333333.3333333, "333333333.3333333"),
    ],
)
def test_numbers_follow_ecmascript(value, expected):
    assert canonical_json(value) == expected.encode()


def test_rfc8785_example_and_key_order():
    # keys sort by UTF-16 code units; strings escape like JSON.stringify; no whitespace
    obj = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    out = canonical_json(obj).decode()
    keys = [json.loads("{" + part.split(":", 1)[0] + ":0}") for part in out[1:-1].split(",")]
    assert [next(iter(k)) for k in keys] == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert canonical_json({"a": [1, True, None, 'x\n"y']}) == b'{"a":[1,true,null,"x\\n\\"y"]}'


def test_matches_json_dumps_for_ordinary_payloads():
    payload = {"b": 2, "a": {"z": 0.31, "y": [1, 2.5]}, "c": "é", "t": True}
    assert (
        canonical_json(payload)
        == json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), {1: "x"}, {"a": object()}, 2**60, b"bytes", "\ud800"]
)
def test_rejects_what_is_not_canonical_json(bad):
    with pytest.raises(CanonicalJsonError):
        canonical_json(bad)


def test_sign_and_verify_with_plain_nacl_and_hashlib():
    sk = SigningKey.generate()
    rec = sign({"receipt_id": "rcpt_1", "energy_j": 0.31, "tokens": {"input": 10}}, sk)
    canonical = json.dumps(rec.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashlib.sha256(canonical).hexdigest() == rec.sha256
    VerifyKey(bytes(sk.verify_key)).verify(canonical, base64.b64decode(rec.signature))
    assert rec.key_version == key_version_of(sk.verify_key)
    assert verify(rec, sk.verify_key)
    assert verify(rec.model_dump(), {rec.key_version: base64.b64encode(bytes(sk.verify_key)).decode()})


def test_any_change_fails_verification():
    sk = SigningKey.generate()
    rec = sign({"receipt_id": "rcpt_1", "energy_j": 0.31, "tokens": {"input": 10}}, sk)
    changed_payload = rec.model_copy(update={"payload": {**rec.payload, "energy_j": 0.3}})
    assert not verify(changed_payload, sk.verify_key)
    nested = json.loads(json.dumps(rec.payload))
    nested["tokens"]["input"] = 11
    assert not verify(rec.model_copy(update={"payload": nested}), sk.verify_key)
    # a re-hashed payload still fails on the signature
    forged = SignedRecord(
        payload=nested,
        sha256=hashlib.sha256(canonical_json(nested)).hexdigest(),
        signature=rec.signature,
        key_version=rec.key_version,
    )
    assert not verify(forged, sk.verify_key)
    assert not verify(rec, SigningKey.generate().verify_key)  # another key
    assert not verify(rec, {"rk-other": sk.verify_key})  # unknown key version
    assert not verify({"payload": {}, "sha256": "x"}, sk.verify_key)  # malformed


def _settings(home, **env):
    return load_settings({"JOULESTREAM_HOME": str(home), **env})


def test_keyring_creates_persists_and_rotates(tmp_path):
    ring = Keyring.load(_settings(tmp_path))
    path = tmp_path / "keys" / "receipts" / f"{ring.current_version}.key"
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Keyring.load(_settings(tmp_path))
    assert again.current_version == ring.current_version
    rec = ring.sign({"n": 1})
    new = Keyring.create_key(tmp_path / "keys" / "receipts")
    os.utime(tmp_path / "keys" / "receipts" / f"{key_version_of(new.verify_key)}.key", (2e9, 2e9))
    rotated = Keyring.load(_settings(tmp_path))
    assert rotated.current_version == key_version_of(new.verify_key)
    assert rotated.verify(rec)  # old receipts still verify
    pks = rotated.public_keys()
    assert pks[0]["current"] and pks[0]["key_version"] == rotated.current_version
    assert {p["key_version"] for p in pks} == {ring.current_version, rotated.current_version}


def test_keyring_from_env(tmp_path):
    sk = SigningKey.generate()
    ring = Keyring.load(_settings(tmp_path, JOULESTREAM_SIGNING_KEY=base64.b64encode(bytes(sk)).decode()))
    assert ring.current_version == key_version_of(sk.verify_key)
    assert not (tmp_path / "keys").exists()  # nothing written
    with pytest.raises(ValueError, match="JOULESTREAM_SIGNING_KEY"):
        Keyring.load(_settings(tmp_path, JOULESTREAM_SIGNING_KEY="not base64!"))


def test_fast_and_exact_encoders_agree():
    import random

    from core.receipts import _encode

    rng = random.Random(5)

    def value(depth=0):
        kind = rng.randrange(9 if depth < 3 else 6)
        if kind == 0:
            return rng.choice(
                [0.0, -0.0, 1.0, 100.0, 1e-7, 1e-5, 2.5e-4, 0.31, 1e15 + 0.5, 1e16, 1e21, -3.75, 1 / 3]
            )
        if kind == 1:
            return rng.randrange(-(2**53), 2**53)
        if kind == 2:
            return rng.choice(["", "é", '\n\t"\\', "\u2028", "\x7f", "\x01", "日本", "\U0001f600"])
        if kind == 3:
            return rng.choice([True, False, None])
        if kind in (4, 5):
            return rng.random() * 10 ** rng.randrange(-8, 22)
        if kind in (6, 7):
            return {
                rng.choice(["a", "B", "é", "\U0001f600", "\ufb33", "1", "aa"]) + str(i): value(depth + 1)
                for i in range(3)
            }
        return [value(depth + 1) for _ in range(3)]

    for _ in range(3000):
        v = value()
        out: list[str] = []
        _encode(v, out)
        assert canonical_json(v) == "".join(out).encode(), v
