import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `tests.*` importable however pytest is started
    sys.path.insert(0, _ROOT)

import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from core.secrets import LocalSecretStore  # noqa: E402
from tests.fixtures_controlplane import db_url, engine, pg_admin  # noqa: E402, F401
from tests.pollers.stubs import ADMIN_KEYS, LIMITED_KEYS, STUBS, ProviderStub  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stubs() -> Iterator[dict[str, ProviderStub]]:
    """One started stub per provider, with its admin key and a limited key registered."""
    out = {}
    for provider, cls in STUBS.items():
        stub = cls().start()
        stub.keys[ADMIN_KEYS[provider]] = "admin"
        stub.keys[LIMITED_KEYS[provider]] = "limited"
        out[provider] = stub
    yield out
    for stub in out.values():
        stub.close()


@pytest.fixture
def secret_store() -> LocalSecretStore:
    return LocalSecretStore(os.urandom(32))


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, key, value, timestamp):
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    """Enough of aiokafka's producer for `core.kafka.send_many`: records what was sent; can be told to fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.fail: Exception | None = None

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, partition: int):
        import asyncio

        if self.fail is not None:
            raise self.fail
        fut = asyncio.get_running_loop().create_future()
        self.sent.extend((topic, k, v) for k, v in batch.records)
        fut.set_result(None)
        return fut


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()
