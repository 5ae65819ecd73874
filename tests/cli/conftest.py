import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.fixtures_controlplane import db_url, engine, pg_admin  # noqa: E402, F401
