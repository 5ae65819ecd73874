"""Numbered SQL migrations (`warehouse/migrations/NNNN_name.sql`), applied in order, recorded in
`schema_migrations` (version, name, checksum, applied_at) of the target database.

* A file holds one or more statements; each ends with `;` at the end of a line. Full-line `--` comments are
  ignored. `{db}` is replaced by the (quoted) database name.
* `migrate()` is idempotent: an applied version is skipped. An applied file whose checksum changed is an
  error (`MigrationError`) — write a new migration instead of editing an applied one.
* ClickHouse DDL is not transactional: a version is recorded after all its statements ran, so statements must
  be idempotent (`IF NOT EXISTS`, …) for an interrupted migration to be re-runnable.
* The cluster variant (`settings.ch_cluster`, docs/deployment.md): the same files, rewritten by `on_cluster`
  for a replicated cluster (one shard, N replicas) — every DDL statement gets `ON CLUSTER <name>` and every
  *MergeTree engine becomes its Replicated* twin with the path `/clickhouse/tables/{uuid}/{shard}` and the
  replica `{replica}` (the server's macros; {uuid} needs the default Atomic database engine). Data
  statements (INSERT … SELECT) run once on the replica the client talks to and replicate from there.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.binding import quote_identifier

from warehouse.client import WarehouseError, ensure_database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE_RE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
# the DDL heads that take ON CLUSTER right after the object's name
_DDL_HEAD = re.compile(
    r"^(\s*(?:CREATE\s+(?:TABLE|MATERIALIZED\s+VIEW|VIEW|DICTIONARY|DATABASE)(?:\s+IF\s+NOT\s+EXISTS)?"
    r"|DROP\s+(?:TABLE|VIEW|DICTIONARY|DATABASE)(?:\s+IF\s+EXISTS)?"
    r"|ALTER\s+TABLE|TRUNCATE\s+TABLE(?:\s+IF\s+EXISTS)?|RENAME\s+TABLE\s+\S+\s+TO)\s+)(\S+)",
    re.IGNORECASE,
)
_ENGINE = re.compile(
    r"\bENGINE\s*=\s*(MergeTree|SummingMergeTree|ReplacingMergeTree|AggregatingMergeTree|CollapsingMergeTree"
    r"|VersionedCollapsingMergeTree)\b(\s*\(([^()]*)\))?",
    re.IGNORECASE,
)
REPLICA_PATH = "'/clickhouse/tables/{uuid}/{shard}', '{replica}'"


class MigrationError(WarehouseError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def statements(self, database: str) -> list[str]:
        body = "\n".join(line for line in self.text.splitlines() if not line.lstrip().startswith("--"))
        body = body.replace("{db}", quote_identifier(database))
        return [s.strip() for s in _STATEMENT_END.split(body) if s.strip()]


def on_cluster(statement: str, cluster: str) -> str:
    """`statement` for a replicated cluster: ON CLUSTER after a DDL statement's object name, Replicated* engines."""
    name = quote_identifier(cluster)
    out = _DDL_HEAD.sub(lambda m: f"{m.group(1)}{m.group(2)} ON CLUSTER {name}", statement, count=1)

    def engine(m: re.Match[str]) -> str:
        args = (m.group(3) or "").strip()
        return f"ENGINE = Replicated{m.group(1)}({REPLICA_PATH}{', ' + args if args else ''})"

    return _ENGINE.sub(engine, out)


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    out: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _FILE_RE.match(path.name)
        if not m:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), path, path.read_text(encoding="utf-8")))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}")
    return out


def migrate(
    client: Client, database: str, directory: Path = MIGRATIONS_DIR, cluster: str | None = None
) -> list[str]:
    """Apply pending migrations to `database`; returns the names (`NNNN_name`) applied by this call. With
    `cluster`, the statements are run `on_cluster` (run the migration from one place, once, before the
    services start: docs/deployment.md)."""
    db = quote_identifier(database)

    def run(statement: str) -> None:
        client.command(on_cluster(statement, cluster) if cluster else statement)

    if cluster:
        run(f"CREATE DATABASE IF NOT EXISTS {db}")
    else:
        ensure_database(client, database)
    run(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, checksum String, "
        "applied_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY version"
    )
    rows = client.query(f"SELECT version, name, checksum FROM {db}.schema_migrations").result_rows
    applied = {int(v): (n, c) for v, n, c in rows}
    done: list[str] = []
    for mig in load_migrations(directory):
        label = f"{mig.version:04d}_{mig.name}"
        if mig.version in applied:
            name, checksum = applied[mig.version]
            if checksum != mig.checksum:
                raise MigrationError(
                    f"migration {label} was applied with checksum {checksum[:12]}… but the file now has "
                    f"{mig.checksum[:12]}…: applied migrations must not change — add a new migration"
                )
            continue
        for statement in mig.statements(database):
            run(statement)
        client.insert(
            f"{db}.schema_migrations",
            [[mig.version, mig.name, mig.checksum, datetime.now(UTC)]],
            column_names=["version", "name", "checksum", "applied_at"],
        )
        done.append(label)
    return done
