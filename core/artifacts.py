"""Object storage for close artefacts (receipt PDFs, audit packs, intermediate event files).

`settings.artifacts` (JOULESTREAM_ARTIFACTS) chooses the store, `open_store(settings)`:

* unset → a local directory, `home/artifacts`;
* `file:///abs/path` or a plain path → that local directory;
* `s3://bucket/prefix` → an S3-compatible store through boto3 (installed with the `aws` extra). The endpoint
  comes from `settings.artifacts_endpoint` (JOULESTREAM_ARTIFACTS_ENDPOINT, e.g. `http://127.0.0.1:9000` for
  MinIO), credentials and region from boto3's own configuration (`AWS_ACCESS_KEY_ID`, …).

Keys are relative, `/`-separated (`receipts/<org>/<YYYY-MM>/<serial>.pdf`). Writes are atomic on the local
store (temp file + rename), so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlparse

from core.settings import Settings


class ArtifactStore(Protocol):
    url: str

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store `data` under `key` (replacing it); returns its SHA-256 (hex)."""
        ...

    def get(self, key: str) -> bytes | None:
        """The bytes under `key`, or None."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key` (nothing happens when it is not there)."""
        ...


def _check_key(key: str) -> str:
    p = PurePosixPath(key)
    if not key or p.is_absolute() or ".." in p.parts or "\\" in key:
        raise ValueError(f"invalid artefact key {key!r}")
    return str(p)


class LocalStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return hashlib.sha256(data).hexdigest()

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client=None) -> None:
        if client is None:
            import boto3  # optional dependency (extra `aws`)

            client = boto3.client("s3", endpoint_url=endpoint_url)
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)
        return hashlib.sha256(data).hexdigest()

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


def open_store(settings: Settings, url: str | None = None) -> ArtifactStore:
    """The store for `url` (default `settings.artifacts`, else `home/artifacts`)."""
    url = url or settings.artifacts or ""
    if not url:
        return LocalStore(settings.home / "artifacts")
    if url.startswith("s3://"):
        u = urlparse(url)
        return S3Store(u.netloc, u.path, endpoint_url=settings.artifacts_endpoint or None)
    if url.startswith("file://"):
        return LocalStore(urlparse(url).path)
    return LocalStore(url)
