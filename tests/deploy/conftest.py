from tests.fixtures_controlplane import pg_admin  # noqa: F401 — the test PostgreSQL (server-mode test)
