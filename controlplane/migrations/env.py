"""Alembic environment for the control plane. Run programmatically by `controlplane.db.upgrade`, which
passes an open connection in `config.attributes["connection"]`; with the `alembic` CLI the URL comes from
`-x url=…`, `sqlalchemy.url` or `JOULESTREAM_DATABASE`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from controlplane.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER TABLE goes through batch mode
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from core.settings import load_settings

    return load_settings().database


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        from controlplane.db import get_engine

        with get_engine(_url()).begin() as conn:
            _run(conn)
