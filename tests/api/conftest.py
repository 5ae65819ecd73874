import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `tests.*` and `api` importable however pytest is started
    sys.path.insert(0, _ROOT)

from tests.api.telemetry_data import c, ds, tapp, wh  # noqa: E402, F401
from tests.fixtures_api import anyio_backend, api, make_app, settings, tenants  # noqa: E402, F401
from tests.fixtures_controlplane import db_url, engine, jwks, pg_admin  # noqa: E402, F401
