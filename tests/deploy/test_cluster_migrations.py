"""The cluster variant of the warehouse migrations (JOULESTREAM_CH_CLUSTER): every DDL statement ON CLUSTER,
every *MergeTree engine Replicated*, and all of it parsed by ClickHouse's own parser (chdb's `EXPLAIN AST`, in a
child process: a test process keeps its one chdb path for the fixtures). No ClickHouse cluster runs here, so
this proves the SQL is valid ClickHouse, not that a cluster accepts it (docs/deployment.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.stack import REPO
from warehouse.migrate import REPLICA_PATH, load_migrations, on_cluster


def test_on_cluster_rewrites_heads_and_engines():
    assert on_cluster(
        "CREATE TABLE IF NOT EXISTS `db`.t\n(x Int8)\nENGINE = MergeTree\nORDER BY x", "c1"
    ) == (
        f"CREATE TABLE IF NOT EXISTS `db`.t ON CLUSTER `c1`\n(x Int8)\nENGINE = ReplicatedMergeTree({REPLICA_PATH})"
        "\nORDER BY x"
    )
    assert (
        on_cluster("ALTER TABLE `db`.t ADD COLUMN y Int8", "c1")
        == "ALTER TABLE `db`.t ON CLUSTER `c1` ADD COLUMN y Int8"
    )
    assert on_cluster("DROP VIEW IF EXISTS `db`.v", "c1") == "DROP VIEW IF EXISTS `db`.v ON CLUSTER `c1`"
    assert "ReplicatedReplacingMergeTree(" + REPLICA_PATH + ", version)" in on_cluster(
        "CREATE TABLE d.t (x Int8, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY x", "c1"
    )
    insert = "INSERT INTO `db`.t SELECT 1"
    assert on_cluster(insert, "c1") == insert  # data statements run once and replicate


def test_every_migration_has_a_cluster_form():
    for mig in load_migrations():
        for st in mig.statements("joulestream"):
            out = on_cluster(st, "main")
            if not st.upper().startswith("INSERT"):
                assert " ON CLUSTER `main`" in out, f"{mig.version}: {st[:80]}"
            assert "ENGINE = MergeTree" not in out and "ENGINE = SummingMergeTree" not in out


def test_cluster_and_single_server_sql_parse_in_clickhouse():
    script = textwrap.dedent(
        """
        import chdb
        from warehouse.migrate import load_migrations, on_cluster
        n = 0
        for m in load_migrations():
            for st in m.statements("joulestream"):
                for sql in (st, on_cluster(st, "main")):
                    chdb.query("EXPLAIN AST " + sql, "TabSeparated")  # raises on a syntax error
                    n += 1
        print(n)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) == 2 * sum(len(m.statements("joulestream")) for m in load_migrations())
