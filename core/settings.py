"""The one settings object: every environment variable joulestream reads is a field here, read once, typed
and validated (pydantic-settings), then passed down. Nothing else in the product reads the environment.

An unset connection string means the embedded default; every embedded state file lives under `home`.

| variable                                 | field                   | unset →                                   |
|------------------------------------------|-------------------------|-------------------------------------------|
| JOULESTREAM_HOME                         | home                    | ./.joulestream                            |
| JOULESTREAM_KAFKA                        | kafka                   | 127.0.0.1:19092 (embedded Tansu)          |
| JOULESTREAM_CLICKHOUSE                   | clickhouse              | chdb:///$JOULESTREAM_HOME/warehouse       |
| JOULESTREAM_CH_DATABASE                  | ch_database             | joulestream                               |
| JOULESTREAM_DATABASE                     | database                | sqlite:///$JOULESTREAM_HOME/control.db    |
| JOULESTREAM_TOPIC_PREFIX                 | topic_prefix            | "" (none; tests set one per test)         |
| JOULESTREAM_PUBLIC_URL (JOULESTREAM_APP_URL, the old name, still read) | public_url | http://127.0.0.1:8787 |
| JOULESTREAM_SALES_URL                    | sales_url               | https://joulestream.dev/contact-sales     |
| JOULESTREAM_MASTER_KEY                   | master_key              | embedded demo: `home/master.key`          |
| JOULESTREAM_SECRET_STORE                 | secret_store            | local                                     |
| JOULESTREAM_AWS_REGION, _AWS_SECRET_PREFIX | aws_region, aws_secret_prefix | boto3's default, `joulestream/connections` |
| JOULESTREAM_SIGNING_KEY                  | signing_key             | generated under `home/keys/`              |
| JOULESTREAM_ARTIFACTS, _ARTIFACTS_ENDPOINT | artifacts, artifacts_endpoint | `home/artifacts`                    |
| JOULESTREAM_JWT_JWKS_URL, _ISSUER, _AUDIENCE, _ORG_CLAIM, _MEMBERSHIPS_CLAIM | jwt_* | API keys only   |
| JOULESTREAM_POLL_INTERVAL_S, _LOOKBACK_H, _BACKFILL_DAYS, _MAX_FAILURES, _TICK_S | poll_* | 3600, 48, 7, 5, 15 |
| JOULESTREAM_TELEMETRY_SCRAPE_S, _TIMEOUT_S, _LOOKBACK_H | telemetry_* | 60, 10, 48 (GPU telemetry scraper) |
| JOULESTREAM_{OPENAI,ANTHROPIC,OPENROUTER}_BASE_URL | openai_base_url, … | the providers' public APIs      |
| STRIPE_API_KEY, STRIPE_API_BASE, STRIPE_WEBHOOK_SECRET | stripe_api_key, stripe_api_base, stripe_webhook_secret | Stripe off |
| JOULESTREAM_STRIPE_PRICES                | stripe_prices           | `price_joulestream_<plan>`                |
| JOULESTREAM_KPI_REFRESH_S                | kpi_refresh_s           | 60 (0: refresh on request only)           |
| JOULESTREAM_METRICS_TOKEN                | metrics_token           | /prometheus/metrics closed (403)          |
| JOULESTREAM_METRICS_OPEN                 | metrics_open            | false (true: /prometheus/metrics unauthenticated) |
| JOULESTREAM_METRICS_PER_ORG              | metrics_per_org         | false (true: per-org energy/CO2e series)  |
| JOULESTREAM_METRICS_DIR                  | metrics_dir             | `home/metrics` (multiprocess metric files) |
| JOULESTREAM_FACTORS_REFRESH_S            | factors_refresh_s       | 10 (how often the worker re-reads the current factor set) |
| JOULESTREAM_INSIGHTS_WINDOW              | insights_window         | 30d (the recommendations' and score's default window) |
| JOULESTREAM_API_MAX_BODY_BYTES           | api_max_body_bytes      | 1048576 (1 MiB; larger API bodies → 413)  |
| JOULESTREAM_FORWARDED_ALLOW_IPS          | forwarded_allow_ips     | none: X-Forwarded-* headers are ignored   |
| JOULESTREAM_PUBLIC_RATE_LIMIT            | public_rate_limit       | 60/minute per client IP (unauthenticated routes) |
| JOULESTREAM_RATE_LIMIT_STORAGE           | rate_limit_storage      | memory:// (per process; redis://… shared) |
| JOULESTREAM_HEALTH_DETAILS               | health_details          | false: unauthenticated /health = status only |
| JOULESTREAM_KAFKA_PARTITIONS             | kafka_partitions        | 4 (partitions of each topic created; ≥ the number of workers) |
| JOULESTREAM_KAFKA_REPLICATION            | kafka_replication       | 1 (replication factor of each topic created; 3 on a real cluster) |
| JOULESTREAM_CH_CLUSTER                   | ch_cluster              | none: one ClickHouse server; a name: ON CLUSTER DDL, Replicated engines |
| JOULESTREAM_DASHBOARD_SESSION_S, _SIGNIN_LINK_S | dashboard_session_s, dashboard_signin_link_s | 43200 (12 h), 600 (10 min) |
| JOULESTREAM_DAGSTER_URL                  | dagster_url             | none: the dashboard shows no Dagster link (`up --dagster` sets it) |
| JOULESTREAM_BATCH_MAX_LINES, _MAX_FILE_BYTES, _CONCURRENCY, _POLL_S, _FINISH_MARGIN_H | batch_* | 50000, 100 MiB, 16, 1.0, 2 (docs/batch.md) |
| JOULESTREAM_AUTH_SECRET                  | auth_secret             | generated in `home/keys/auth.key` (first-party JWTs, HS256) |
| JOULESTREAM_AUTH_ACCESS_TTL_S, _AUTH_REFRESH_TTL_S | auth_access_ttl_s, auth_refresh_ttl_s | 900 (15 min), 2592000 (30 days) |
| JOULESTREAM_IDENTITY_WEBHOOK_SECRET (CLERK_WEBHOOK_SECRET) | identity_webhook_secret | identity webhook off (503) |
| JOULESTREAM_LOGIN_RATE_LIMIT_ACCOUNT, _LOGIN_RATE_LIMIT_IP | login_rate_limit_account, login_rate_limit_ip | 5/minute per account, 20/minute per IP |

`load_settings()` reads the process environment; `load_settings(env)` reads only the mapping given (tests,
subprocess environments), so the two never mix. Upstream API keys named in a gateway routing file
(`api_key_env:`) are read through `env_secret()`, the one other door to the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KAFKA_PORT = 19092
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8787"
PREFIX = "JOULESTREAM_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    # Where things are
    home: Path = Path("./.joulestream")
    kafka: str = ""
    kafka_embedded: bool = Field(default=False, exclude=True)  # derived: JOULESTREAM_KAFKA unset
    clickhouse: str = ""
    ch_database: str = "joulestream"
    database: str = ""
    topic_prefix: str = ""
    public_url: str = Field(
        default=DEFAULT_PUBLIC_URL,
        validation_alias=AliasChoices("public_url", f"{PREFIX}PUBLIC_URL", f"{PREFIX}APP_URL"),
    )
    sales_url: str = "https://joulestream.dev/contact-sales"

    # Secrets and keys
    master_key: SecretStr | None = None
    secret_store: Literal["local", "aws"] = "local"
    aws_region: str | None = None
    aws_secret_prefix: str = "joulestream/connections"
    signing_key: SecretStr | None = None

    # Artefact store (audit packs, receipt PDFs)
    artifacts: str | None = None
    artifacts_endpoint: str | None = None

    # Bearer JWTs (off unless the JWKS URL, issuer and audience are all set)
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_org_claim: str = "org_slug"
    jwt_memberships_claim: str = "orgs"

    # Provider usage pollers
    poll_interval_s: PositiveFloat = 3600
    poll_lookback_h: PositiveFloat = 48
    poll_backfill_days: PositiveFloat = 7
    poll_max_failures: PositiveInt = 5
    poll_tick_s: PositiveFloat = 15
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    openrouter_base_url: str | None = None

    # GPU telemetry (pipelines/telemetry, docs/measured-energy.md): scrape interval, per-request timeout, and how
    # far back closed hours are recomputed (and state kept)
    telemetry_scrape_s: PositiveFloat = 60
    telemetry_timeout_s: PositiveFloat = 10
    telemetry_lookback_h: PositiveFloat = 48

    # Stripe (billing)
    stripe_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("stripe_api_key", "STRIPE_API_KEY")
    )
    stripe_api_base: str | None = Field(
        default=None, validation_alias=AliasChoices("stripe_api_base", "STRIPE_API_BASE")
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("stripe_webhook_secret", "STRIPE_WEBHOOK_SECRET")
    )
    stripe_prices: str = ""

    # Reporting: the dashboard KPI cache is recomputed every kpi_refresh_s by each API process (0: never on a
    # schedule, only on POST /metrics/dashboard-summary/refresh and on a first read)
    kpi_refresh_s: float = Field(default=60.0, ge=0)
    # Methodology: how often the stream worker re-reads the control plane's current factor set (seconds)
    factors_refresh_s: float = Field(default=10.0, gt=0, le=3600)
    # Insights: the window recommendations and the score look at when a request names none (core.windows `last`)
    insights_window: str = Field(default="30d", pattern=r"^(ytd|[1-9][0-9]{0,5}[hdwy])$")
    # Operations: /prometheus/metrics (core/metrics.py, docs/operations.md)
    metrics_token: SecretStr | None = None
    metrics_open: bool = False
    metrics_per_org: bool = False
    metrics_dir: Path | None = None
    # The dashboard (docs/dashboard.md): a sign-in link's session key lives dashboard_session_s; a link is
    # exchangeable for dashboard_signin_link_s; dagster_url is shown to admins (the operators' UI)
    dashboard_session_s: PositiveInt = 43200
    dashboard_signin_link_s: PositiveInt = 600
    dagster_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://")

    # HTTP hardening (API and gateway; docs/security.md)
    api_max_body_bytes: PositiveInt = 1 << 20
    # comma-separated proxy addresses/networks whose X-Forwarded-For is trusted ("*" = any); none by default
    forwarded_allow_ips: str = ""
    public_rate_limit: str = "60/minute"  # `limits` notation, per client IP, for the unauthenticated routes
    rate_limit_storage: str = "memory://"  # `limits` storage URI: memory:// per process, redis://host shared
    health_details: bool = False  # unauthenticated /health shows versions, checks and latencies too

    # Distributed deployment (docs/deployment.md): topics the `topics` step creates, and the ClickHouse cluster
    kafka_partitions: int = Field(default=4, ge=1, le=10_000)  # the most stream workers that share the work
    kafka_replication: int = Field(default=1, ge=1, le=16)  # replication factor of new topics
    ch_cluster: str = Field(default="", pattern=r"^[A-Za-z0-9_]{0,64}$")  # a name → ON CLUSTER + Replicated*
    # Batch API (docs/batch.md): input-file limits, the runner's concurrency and poll, and how long before the
    # end of the completion window a deferred batch must start at the latest
    batch_max_lines: PositiveInt = 50_000
    batch_max_file_bytes: PositiveInt = 100 << 20
    batch_concurrency: PositiveInt = 16
    batch_poll_s: PositiveFloat = 1.0
    batch_finish_margin_h: float = Field(default=2.0, ge=0, le=23)

    # Tenancy: first-party login, identity webhook (docs/tenancy.md)
    auth_secret: SecretStr | None = None  # HS256 key of first-party access/refresh JWTs (API and gateway)
    auth_access_ttl_s: PositiveInt = 900
    auth_refresh_ttl_s: PositiveInt = 30 * 24 * 3600
    identity_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "identity_webhook_secret", "JOULESTREAM_IDENTITY_WEBHOOK_SECRET", "CLERK_WEBHOOK_SECRET"
        ),
    )
    login_rate_limit_account: str = "5/minute"  # `limits` notation: login attempts per account (email)
    login_rate_limit_ip: str = "20/minute"  # login attempts per client IP

    @field_validator("public_rate_limit", "login_rate_limit_account", "login_rate_limit_ip")
    @classmethod
    def _rate_limit_notation(cls, v: str) -> str:
        from limits import parse

        parse(v)  # ValueError on anything but e.g. "60/minute", "10 per second"
        return v

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        """Derived values: connection strings left unset point at the embedded parts under `home`."""
        home = self.home.resolve()
        derived = {
            "home": home,
            "kafka_embedded": not self.kafka,
            "kafka": self.kafka or f"127.0.0.1:{DEFAULT_KAFKA_PORT}",
            "clickhouse": self.clickhouse or f"chdb:///{home / 'warehouse'}",
            "database": self.database or f"sqlite:///{home / 'control.db'}",
            "public_url": self.public_url.rstrip("/"),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # frozen model: derived once, here
        return self

    # Topics
    @property
    def raw_topic(self) -> str:
        return f"{self.topic_prefix}usage.raw.v1"

    @property
    def enriched_topic(self) -> str:
        return f"{self.topic_prefix}usage.enriched.v1"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_prefix}usage.dlq.v1"

    @property
    def metrics_path(self) -> Path:
        """Where the processes of this home keep their metric files (one directory per process tree)."""
        return self.metrics_dir or self.home / "metrics"

    @property
    def embedded_demo(self) -> bool:
        """The `joulestream up` quick start: embedded broker and the default SQLite file under home."""
        return self.kafka_embedded and self.database == f"sqlite:///{self.home / 'control.db'}"

    @property
    def jwt_configured(self) -> bool:
        return bool(self.jwt_jwks_url and self.jwt_issuer and self.jwt_audience)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated (and derived values recomputed) like a fresh load."""
        values = {k: getattr(self, k) for k in type(self).model_fields if k != "kafka_embedded"}
        if self.kafka_embedded and "kafka" not in changes:
            values["kafka"] = ""
        values.update(changes)
        return _from_values(values)


def _env_name(name: str) -> list[str]:
    field = Settings.model_fields[name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [a for a in alias.choices if isinstance(a, str) and a.isupper()]
    return [f"{PREFIX}{name.upper()}"]


def _from_values(values: Mapping[str, Any]) -> Settings:
    """Settings from explicit values only: every field is given (None/unset → its default), so the process
    environment is never consulted."""
    full: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        if name == "kafka_embedded":
            continue
        value = values.get(name)
        full[name] = field.get_default(call_default_factory=True) if value in (None, "") else value
        if name in ("kafka", "clickhouse", "database") and value in (None, ""):
            full[name] = ""
    return Settings(**full)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The settings from `env`, or from the process environment when `env` is None. Creates no directory."""
    e = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        if name == "kafka_embedded":
            continue
        for var in _env_name(name):
            if e.get(var):
                values[name] = e[var]
                break
    return _from_values(values)


def env_secret(name: str | None) -> str | None:
    """The value of an environment variable named in configuration (e.g. a routing file's `api_key_env`)."""
    return os.environ.get(name) if name else None
