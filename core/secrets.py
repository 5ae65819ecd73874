"""Secrets (provider admin keys): stored encrypted or in a vault, never in clear, never logged.

A `SecretStore` turns a secret into a *reference* (a string safe to keep in the control-plane database) and
back. Two implementations share the interface; a reference says which one made it, so reading keeps working
after the default store changes:

| store                   | reference kept in the database                         | where the secret lives          |
|-------------------------|--------------------------------------------------------|---------------------------------|
| `LocalSecretStore`      | `local:v1:<key id>:<base64 nonce+ciphertext>`          | in the reference, NaCl SecretBox (XSalsa20-Poly1305) under the master key |
| `AwsSecretsManagerStore`| `aws:<secret ARN>`                                     | AWS Secrets Manager             |

Configuration (fields of `core.settings.Settings`, passed down; their variables in brackets):

| field              | meaning                                                                                  |
|--------------------|------------------------------------------------------------------------------------------|
| secret_store       | `local` (default) or `aws` [JOULESTREAM_SECRET_STORE]                                    |
| master_key         | local store: 32 random bytes, base64 (std or urlsafe) or 64 hex chars [JOULESTREAM_MASTER_KEY] |
| aws_secret_prefix  | aws store: secret name prefix (default `joulestream/connections`) [JOULESTREAM_AWS_SECRET_PREFIX] |
| aws_region         | aws store: region (default: the AWS SDK's own configuration) [JOULESTREAM_AWS_REGION]    |

Master key rules: without a master key the local store refuses to start (`MasterKeyMissing`), except in the
*embedded demo* (`Settings.embedded_demo`: embedded broker and the default SQLite file, all state under
`home`) — where a key is generated once into `home/master.key` (mode 0600) and reused. Generate a production key with
`python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"`.

Each ciphertext is bound to its name (the connection id): the plaintext is `name NUL secret`, checked on
decryption, so a reference copied onto another row does not decrypt there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from core.settings import Settings

log = logging.getLogger("joulestream.secrets")

MASTER_KEY_ENV = "JOULESTREAM_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
LOCAL_PREFIX = "local:v1:"
AWS_PREFIX = "aws:"
DEFAULT_AWS_PREFIX = "joulestream/connections"
AWS_RECOVERY_DAYS = 30


class SecretStoreError(Exception):
    """A secret could not be stored, read or removed. The message never contains the secret."""


class MasterKeyMissing(SecretStoreError):
    """No master key configured outside the embedded demo."""


class SecretNotFound(SecretStoreError):
    """The reference points at nothing (deleted, or another master key)."""


@runtime_checkable
class SecretStore(Protocol):
    kind: str

    def put(self, name: str, secret: str) -> str:
        """Store `secret` under `name` (e.g. a connection id); return the reference to keep."""
        ...

    def get(self, ref: str, name: str | None = None) -> str:
        """The secret for a reference made by `put` (SecretNotFound / SecretStoreError otherwise). With
        `name`, also check that the reference was made for that name."""
        ...

    def delete(self, ref: str) -> None:
        """Remove the secret (idempotent: an already-removed secret is not an error)."""
        ...


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every secret, and any 12+ character run of its non-public part, replaced by `***`
    (providers sometimes echo a truncated or partly masked key). The first characters of a key are its
    public prefix (`sk-admin-`, `sk-ant-admin01-`, …) and stay readable."""
    n = 12
    for s in secrets:
        if not s:
            continue
        text = text.replace(s, "***")
        for i in range(min(16, len(s) // 3), len(s) - n + 1):
            frag = s[i : i + n]
            if frag in text:
                text = text.replace(frag, "***")
    return text


# --------------------------------------------------------------------------------------------- master key


def parse_master_key(value: str) -> bytes:
    """32 bytes from base64 (std/urlsafe, padding optional) or hex; ValueError otherwise."""
    v = value.strip()
    candidates: list[bytes] = []
    if len(v) == 64:
        try:
            candidates.append(binascii.unhexlify(v))
        except (binascii.Error, ValueError):
            pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decode(v + "=" * (-len(v) % 4)))
        except (binascii.Error, ValueError):
            pass
    for c in candidates:
        if len(c) == 32:
            return c
    raise ValueError(
        f"{MASTER_KEY_ENV} must be 32 random bytes, base64 or hex encoded "
        '(e.g. python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())")'
    )


def load_master_key(settings: Settings) -> bytes:
    """The master key from `settings.master_key`; in the embedded demo, from (or generated into)
    `home/master.key` (0600). Raises MasterKeyMissing otherwise."""
    if settings.master_key is not None:
        try:
            return parse_master_key(settings.master_key.get_secret_value())
        except ValueError as exc:
            raise SecretStoreError(str(exc)) from None
    if not settings.embedded_demo:
        raise MasterKeyMissing(
            f"{MASTER_KEY_ENV} is not set: provider keys cannot be encrypted. Set it to 32 random bytes "
            '(base64), e.g. python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())" '
            "— only the embedded demo (no JOULESTREAM_KAFKA / JOULESTREAM_DATABASE) generates its own."
        )
    return _demo_key(settings.home / MASTER_KEY_FILE)


def _demo_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        log.warning(
            "generated a demo master key in %s (embedded demo only; set %s in production)",
            path,
            MASTER_KEY_ENV,
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SecretStoreError(f"{path} must be private (mode 0600), found {oct(mode)}")
    try:
        return parse_master_key(path.read_text().strip())
    except ValueError as exc:
        raise SecretStoreError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------- local


class LocalSecretStore:
    """NaCl SecretBox under a 32-byte master key; the reference carries the ciphertext."""

    kind = "local"

    def __init__(self, master_key: bytes) -> None:
        from nacl.secret import SecretBox

        if len(master_key) != 32:
            raise SecretStoreError("the master key must be 32 bytes")
        self._box = SecretBox(master_key)
        self.key_id = hashlib.sha256(b"joulestream-master-key:" + master_key).hexdigest()[:8]

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalSecretStore:
        return cls(load_master_key(settings))

    def put(self, name: str, secret: str) -> str:
        if not secret:
            raise SecretStoreError("empty secret")
        blob = self._box.encrypt(name.encode() + b"\0" + secret.encode())  # random 24-byte nonce
        return f"{LOCAL_PREFIX}{self.key_id}:{base64.urlsafe_b64encode(bytes(blob)).decode()}"

    def get(self, ref: str, name: str | None = None) -> str:
        from nacl.exceptions import CryptoError

        if not ref.startswith(LOCAL_PREFIX):
            raise SecretStoreError("not a local secret reference")
        try:
            key_id, b64 = ref[len(LOCAL_PREFIX) :].split(":", 1)
        except ValueError:
            raise SecretStoreError("malformed local secret reference") from None
        if key_id != self.key_id:
            raise SecretNotFound(
                f"secret was encrypted with another master key (id {key_id}, current {self.key_id})"
            )
        try:
            plain = self._box.decrypt(base64.urlsafe_b64decode(b64))
        except (CryptoError, binascii.Error, ValueError):
            raise SecretStoreError("secret reference does not decrypt (corrupted)") from None
        bound, sep, secret = plain.partition(b"\0")
        if not sep:
            raise SecretStoreError("secret reference does not decrypt (corrupted)")
        if name is not None and bound != name.encode():
            raise SecretStoreError("secret reference belongs to another object")
        return secret.decode()

    def delete(self, ref: str) -> None:
        """Nothing to do: the ciphertext lives in the reference, which the caller erases."""


# --------------------------------------------------------------------------------------------- AWS


class AwsSecretsManagerStore:
    """AWS Secrets Manager: `put` creates a secret named `<prefix>/<name>`, the reference is its ARN.
    `delete` schedules deletion with a 30-day recovery window. boto3 is imported lazily (optional
    dependency); pass `client=` to inject one (tests use botocore's Stubber)."""

    kind = "aws"

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_AWS_PREFIX,
        region: str | None = None,
        client: Any | None = None,
        recovery_days: int = AWS_RECOVERY_DAYS,
    ) -> None:
        self.prefix = prefix.strip("/")
        self.region = region
        self.recovery_days = recovery_days
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> AwsSecretsManagerStore:
        return cls(prefix=settings.aws_secret_prefix or DEFAULT_AWS_PREFIX, region=settings.aws_region)

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError:
                raise SecretStoreError(
                    "JOULESTREAM_SECRET_STORE=aws needs boto3 (pip install boto3)"
                ) from None
            self._client = boto3.client("secretsmanager", region_name=self.region)
        return self._client

    def _call(self, op: str, **kwargs: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, op)(**kwargs)
        except ClientError as exc:  # never echo the request (it may carry the secret)
            code = exc.response.get("Error", {}).get("Code")
            if code == "ResourceNotFoundException":
                raise SecretNotFound("secret not found in AWS Secrets Manager") from None
            raise SecretStoreError(f"AWS Secrets Manager {op} failed: {code}") from None
        except BotoCoreError as exc:
            raise SecretStoreError(f"AWS Secrets Manager {op} failed: {type(exc).__name__}") from None

    def put(self, name: str, secret: str) -> str:
        if not secret:
            raise SecretStoreError("empty secret")
        out = self._call(
            "create_secret",
            Name=f"{self.prefix}/{name}",
            SecretString=secret,
            Description="joulestream provider connection key",
            Tags=[{"Key": "joulestream", "Value": "connection"}],
        )
        return AWS_PREFIX + out["ARN"]

    def get(self, ref: str, name: str | None = None) -> str:
        if not ref.startswith(AWS_PREFIX):
            raise SecretStoreError("not an AWS secret reference")
        if name is not None and f"/{name}-" not in ref:  # ARN: …:secret:<prefix>/<name>-<6 random chars>
            raise SecretStoreError("secret reference belongs to another object")
        return self._call("get_secret_value", SecretId=ref[len(AWS_PREFIX) :])["SecretString"]

    def delete(self, ref: str) -> None:
        if not ref.startswith(AWS_PREFIX):
            raise SecretStoreError("not an AWS secret reference")
        try:
            self._call(
                "delete_secret", SecretId=ref[len(AWS_PREFIX) :], RecoveryWindowInDays=self.recovery_days
            )
        except SecretNotFound:
            pass


# --------------------------------------------------------------------------------------------- routing


class SecretStores:
    """The configured default store for new secrets, and dispatch by reference prefix for old ones. Each
    backend is built on first use (from `settings`), so a deployment that never uses AWS never needs boto3."""

    kind = "router"

    def __init__(
        self,
        default: str = "local",
        *,
        local: LocalSecretStore | None = None,
        aws: AwsSecretsManagerStore | None = None,
        settings: Settings | None = None,
    ) -> None:
        if default not in ("local", "aws"):
            raise SecretStoreError(f"unknown JOULESTREAM_SECRET_STORE {default!r}: use local or aws")
        self.default = default
        self._local, self._aws = local, aws
        self._settings = settings

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretStores:
        """The configured stores, checked (raises MasterKeyMissing when the default store has no key)."""
        stores = cls(settings.secret_store, settings=settings)
        stores.check()
        return stores

    def check(self) -> None:
        """Fail now (not on the first secret) when the default store is unusable, e.g. no master key."""
        self._store(self.default)

    def _store(self, kind: str) -> LocalSecretStore | AwsSecretsManagerStore:
        if kind == "local":
            if self._local is None:
                if self._settings is None:
                    raise MasterKeyMissing("no local secret store configured")
                self._local = LocalSecretStore.from_settings(self._settings)
            return self._local
        if self._aws is None:
            if self._settings is None:
                raise SecretStoreError("no AWS secret store configured")
            self._aws = AwsSecretsManagerStore.from_settings(self._settings)
        return self._aws

    def _for_ref(self, ref: str) -> LocalSecretStore | AwsSecretsManagerStore:
        if ref.startswith(LOCAL_PREFIX):
            return self._store("local")
        if ref.startswith(AWS_PREFIX):
            return self._store("aws")
        raise SecretStoreError("unknown secret reference kind")

    def put(self, name: str, secret: str) -> str:
        return self._store(self.default).put(name, secret)

    def get(self, ref: str, name: str | None = None) -> str:
        return self._for_ref(ref).get(ref, name)

    def delete(self, ref: str) -> None:
        if ref.startswith(LOCAL_PREFIX):  # the ciphertext lives in the reference: nothing to remove
            return
        self._for_ref(ref).delete(ref)
