"""Signed records: canonical JSON, SHA-256 and Ed25519 signatures with a versioned key.

Used by the gateway's per-request receipts and by the monthly receipts. A signed record is

    {"payload": {...}, "sha256": "<hex of SHA-256(canonical_json(payload))>",
     "signature": "<base64 Ed25519 signature of canonical_json(payload)>",
     "key_version": "rk-…", "algorithm": "ed25519"}

Canonical JSON is RFC 8785 (JCS): object keys sorted by UTF-16 code units, no insignificant whitespace,
UTF-8, strings escaped as ECMAScript's JSON.stringify does, numbers in ECMAScript's shortest round-trip
form (1.0 → 1, 1e-7 → 1e-7, 0.00001 → 0.00001). NaN/Infinity and integers beyond ±2^53 are rejected.
For payloads whose keys are ASCII and whose numbers are integers or floats in [1e-4, 1e16), this equals
`json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` — any language can check
a record offline with the public key:

    canonical = json.dumps(rec["payload"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashlib.sha256(canonical).hexdigest() == rec["sha256"]
    nacl.signing.VerifyKey(base64.b64decode(public_key)).verify(canonical, base64.b64decode(rec["signature"]))

Keys (`Keyring.load(settings)`): the current signing key is `settings.signing_key` (JOULESTREAM_SIGNING_KEY,
base64 of the 32-byte Ed25519 seed) when set, else the newest key under `home/keys/receipts/` (`<version>.key`, mode 0600, created
on first use). Older keys stay in the directory so records they signed still verify. A key's version is
derived from its public key (`rk-` + the first 16 hex digits of SHA-256 of the public key), so a version
names exactly one key and two processes sharing a key agree on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field

from core.settings import Settings

ALGORITHM = "ed25519"
MAX_SAFE_INT = 2**53
ENV_KEY = "JOULESTREAM_SIGNING_KEY"
KEY_DIR = Path("keys") / "receipts"


class CanonicalJsonError(ValueError):
    """The value cannot be written as canonical JSON (NaN, a non-str key, an unsupported type, …)."""


# --------------------------------------------------------------------------------------------- canonical JSON


def _number(x: float) -> str:
    """ECMAScript Number::toString for a finite double (what JCS prescribes)."""
    if not math.isfinite(x):
        raise CanonicalJsonError(f"{x!r} is not a finite number")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    d = Decimal(repr(abs(x)))  # repr = the shortest digits that round-trip, like ECMAScript
    _, digits_t, exp = d.as_tuple()
    digits = "".join(map(str, digits_t)).rstrip("0") or "0"
    trailing = len(digits_t) - len(digits)
    exp += trailing  # type: ignore[operator]
    k = len(digits)
    n = exp + k  # value = 0.digits × 10^n
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mant = digits if k == 1 else digits[0] + "." + digits[1:]
        out = f"{mant}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + out


def _encode(obj: Any, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        if abs(obj) > MAX_SAFE_INT:
            raise CanonicalJsonError(f"integer {obj} is outside ±2^53: send it as a string")
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        out.append(_number(obj))
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False))
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, item in enumerate(obj):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(obj, Mapping):
        keys = list(obj)
        for key in keys:
            if not isinstance(key, str):
                raise CanonicalJsonError(f"object key {key!r} is not a string")
        out.append("{")
        for i, key in enumerate(sorted(keys, key=lambda k: k.encode("utf-16-be", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(obj[key], out)
        out.append("}")
    else:
        raise CanonicalJsonError(f"unsupported type {type(obj).__name__} in canonical JSON")


class _Unsafe(Exception):
    """The value needs the exact (slow) encoder."""


def _normalise(obj: Any) -> Any:
    """A copy that the C `json` encoder writes exactly as RFC 8785 does, or _Unsafe.

    Python's float repr equals ECMAScript's for non-integral values in [1e-4, 1e16); integral floats are
    written as ints (100.0 → 100, -0.0 → 0, as ECMAScript does); keys sort alike unless they hold
    characters beyond the BMP (UTF-16 surrogate pairs sort differently from code points)."""
    t = type(obj)
    if t is str or obj is None or t is bool:
        return obj
    if t is int:
        if -MAX_SAFE_INT <= obj <= MAX_SAFE_INT:
            return obj
        raise _Unsafe
    if t is float:
        if obj.is_integer() and abs(obj) < 1e16:
            return int(obj)
        a = abs(obj)
        if 1e-4 <= a < 1e16:
            return obj
        raise _Unsafe
    if t is dict:
        out = {}
        for k, v in obj.items():
            if type(k) is not str or (not k.isascii() and any(ord(c) > 0xFFFF for c in k)):
                raise _Unsafe
            out[k] = _normalise(v)
        return out
    if t is list or t is tuple:
        return [_normalise(v) for v in obj]
    raise _Unsafe


_fast_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 canonical JSON of `obj` (dicts, lists, str, int, float, bool, None), UTF-8."""
    try:
        text = _fast_dumps(_normalise(obj))
    except _Unsafe:
        out: list[str] = []
        _encode(obj, out)
        text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate
        raise CanonicalJsonError(f"string is not valid Unicode: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------- records


class SignedRecord(BaseModel):
    """A payload, its SHA-256 and its Ed25519 signature (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    payload: dict[str, Any]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(description="base64 Ed25519 signature of canonical_json(payload)")
    key_version: str = Field(min_length=1, max_length=64)
    algorithm: Literal["ed25519"] = ALGORITHM

    def canonical(self) -> bytes:
        return canonical_json(self.payload)


def key_version_of(verify_key: VerifyKey) -> str:
    return "rk-" + sha256_hex(bytes(verify_key))[:16]


def sign(payload: Mapping[str, Any], key: SigningKey, key_version: str | None = None) -> SignedRecord:
    """Sign `payload`. `key_version` defaults to the key's derived version (`key_version_of`)."""
    canonical = canonical_json(payload)
    signature = key.sign(canonical).signature
    return SignedRecord.model_construct(  # every field is made here, already valid: skip re-validation
        payload=dict(payload),
        sha256=sha256_hex(canonical),
        signature=base64.b64encode(signature).decode("ascii"),
        key_version=key_version or key_version_of(key.verify_key),
        algorithm=ALGORITHM,
    )


def _as_verify_key(k: VerifyKey | bytes | str) -> VerifyKey:
    if isinstance(k, VerifyKey):
        return k
    if isinstance(k, str):
        k = base64.b64decode(k, validate=True)
    return VerifyKey(k)


def verify(
    record: SignedRecord | Mapping[str, Any],
    keys: VerifyKey | bytes | str | Mapping[str, VerifyKey | bytes | str] | Keyring,
) -> bool:
    """True when the record's hash and signature match its payload under the key named by `key_version`.

    `keys`: one public key (VerifyKey, raw bytes or base64), a mapping key_version → public key, or a
    Keyring. A changed field, a wrong hash, an unknown key
    version or a malformed record all give False."""
    try:
        rec = record if isinstance(record, SignedRecord) else SignedRecord.model_validate(record)
        if isinstance(keys, Keyring):
            vk = keys.public_key(rec.key_version)
            if vk is None:
                return False
        elif isinstance(keys, Mapping):
            raw = keys.get(rec.key_version)
            if raw is None:
                return False
            vk = _as_verify_key(raw)
        else:
            vk = _as_verify_key(keys)
        canonical = rec.canonical()
        if sha256_hex(canonical) != rec.sha256:
            return False
        vk.verify(canonical, base64.b64decode(rec.signature, validate=True))
        return True
    except (BadSignatureError, ValueError, TypeError, binascii.Error):
        return False


# --------------------------------------------------------------------------------------------- keys


def _write_secret(path: Path, data: bytes) -> bool:
    """Create `path` (0600) with `data` unless it exists. True when this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic create-if-absent: two processes never both "win"
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


class Keyring:
    """The current signing key and every known public key, by version."""

    def __init__(self, current: SigningKey, others: Mapping[str, VerifyKey] | None = None) -> None:
        self.current = current
        self.current_version = key_version_of(current.verify_key)
        self.keys: dict[str, VerifyKey] = dict(others or {})
        self.keys[self.current_version] = current.verify_key

    @classmethod
    def load(cls, settings: Settings, create: bool = True) -> Keyring:
        """Load (and, with `create`, make on first use) the receipt keys; see the module docstring."""
        key_dir = settings.home / KEY_DIR
        stored: dict[str, tuple[float, SigningKey]] = {}
        if key_dir.is_dir():
            for path in key_dir.glob("rk-*.key"):
                try:
                    sk = SigningKey(base64.b64decode(path.read_text().strip(), validate=True))
                except (ValueError, binascii.Error, TypeError) as exc:
                    raise ValueError(f"unreadable receipt signing key {path}: {exc}") from None
                stored[key_version_of(sk.verify_key)] = (path.stat().st_mtime, sk)
        seed = settings.signing_key.get_secret_value() if settings.signing_key else None
        if seed:
            try:
                current = SigningKey(base64.b64decode(seed.strip(), validate=True))
            except (ValueError, binascii.Error, TypeError):
                raise ValueError(f"{ENV_KEY} must be base64 of a 32-byte Ed25519 seed") from None
        elif stored:
            current = max(stored.values(), key=lambda t: t[0])[1]
        elif create:
            current = cls.create_key(key_dir)
            stored[key_version_of(current.verify_key)] = (0.0, current)
        else:
            raise FileNotFoundError(f"no receipt signing key in {key_dir} and {ENV_KEY} is unset")
        return cls(current, {v: sk.verify_key for v, (_, sk) in stored.items()})

    @staticmethod
    def create_key(key_dir: Path) -> SigningKey:
        """A new key saved as `<version>.key` (0600); it becomes the newest, so the current one."""
        sk = SigningKey.generate()
        path = key_dir / f"{key_version_of(sk.verify_key)}.key"
        _write_secret(path, base64.b64encode(bytes(sk)) + b"\n")
        return sk

    def sign(self, payload: Mapping[str, Any]) -> SignedRecord:
        return sign(payload, self.current, self.current_version)

    def verify(self, record: SignedRecord | Mapping[str, Any]) -> bool:
        return verify(record, self)

    def public_key(self, version: str) -> VerifyKey | None:
        return self.keys.get(version)

    def public_keys(self) -> list[dict[str, Any]]:
        """Every public key, current first: what `GET /v1/receipts/public-key` publishes."""
        versions = [self.current_version] + sorted(v for v in self.keys if v != self.current_version)
        return [
            {
                "key_version": v,
                "algorithm": ALGORITHM,
                "public_key": base64.b64encode(bytes(self.keys[v])).decode("ascii"),
                "current": v == self.current_version,
            }
            for v in versions
        ]


def utc_timestamp(dt: datetime | None = None) -> str:
    """ISO-8601 UTC with microseconds and a 'Z': the timestamp format used inside signed payloads."""
    dt = (dt or datetime.now(UTC)).astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
