"""Engines and migrations for the control-plane database.

`JOULESTREAM_DATABASE` (`settings.database`) is a SQLAlchemy URL: unset means
`sqlite:///$JOULESTREAM_HOME/control.db`; production uses `postgresql+psycopg://…`. A PostgreSQL schema can
be chosen in the URL with libpq options, e.g. `…/db?options=-csearch_path%3Dtenant_a` (tests do this).

`upgrade(engine)` runs the Alembic migrations that live in this package (`migrations/`) programmatically:
no alembic.ini is needed at runtime, it is idempotent, and on PostgreSQL concurrent callers are serialised
with an advisory lock. It is a step of its own — `joulestream migrate`, and the start of the long-running
commands (`up`, `worker`, `gateway`, `poll`) — never a side effect of building an engine, an app or a
repository. To author a new revision:
`alembic -c controlplane/migrations/alembic.ini revision -m "…"` (then write the upgrade by hand).
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from core.files import private_dir, private_file

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_ADVISORY_LOCK_KEY = 0x6A6F756C65  # "joule": serialises concurrent upgrades on PostgreSQL

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def get_engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: `load_settings().database`), created once per URL per process."""
    if url is None:
        from core.settings import load_settings

        url = load_settings().database
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def dispose_engine(url: str) -> None:
    """Close the pooled connections of `url`'s engine and forget it (tests, shutdown)."""
    with _lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def _create_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return create_engine(u, pool_pre_ping=True)
    memory = not u.database or u.database == ":memory:" or u.query.get("mode") == "memory"
    if memory:
        engine = create_engine(u, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    else:
        db_path = Path(u.database).expanduser()
        private_dir(db_path.parent)
        # timeout = SQLite busy timeout (seconds): writers from several threads wait instead of failing
        engine = create_engine(u, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        try:
            if not memory:
                # key hashes and encrypted provider keys: owner-only (SQLite gives the -wal and -shm files
                # the database file's mode; files left 0644 by an older version are tightened here)
                for suffix in ("", "-wal", "-shm"):
                    private_file(db_path.with_name(db_path.name + suffix))
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    return engine


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the control-plane schema to `revision` (default: the newest). Idempotent."""
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
