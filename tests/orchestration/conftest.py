"""Fixtures for the monthly close: the control plane on SQLite and PostgreSQL, a warehouse database filled
through the real pipeline path, and the close's resources pointed at them."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.fixtures_controlplane import db_url, engine, pg_admin  # noqa: E402, F401
from tests.orchestration.helpers import close_env  # noqa: E402, F401
