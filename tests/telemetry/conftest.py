from collections.abc import Iterator

import pytest

from tests.fixtures_api import make_app, settings, tenants  # noqa: F401
from tests.fixtures_controlplane import db_url, engine, pg_admin  # noqa: F401
from tests.telemetry.scenario import make_stub
from tests.telemetry.stubs import TelemetryStub


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stub() -> Iterator[TelemetryStub]:
    s = make_stub().start()
    yield s
    s.close()
