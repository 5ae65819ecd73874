"""Settings from the environment. An unset connection string means the embedded default.

| variable                 | meaning                                   | unset →                                   |
|--------------------------|-------------------------------------------|-------------------------------------------|
| JOULESTREAM_HOME         | data dir for all embedded state            | ./.joulestream                            |
| JOULESTREAM_KAFKA        | bootstrap servers, host:port[,host:port]   | 127.0.0.1:19092 (embedded Tansu)          |
| JOULESTREAM_CLICKHOUSE   | http(s)://user:pass@host:port/db or chdb:// | chdb:///$JOULESTREAM_HOME/warehouse       |
| JOULESTREAM_CH_DATABASE  | ClickHouse database for joulestream tables | joulestream                               |
| JOULESTREAM_DATABASE     | SQLAlchemy URL of the control plane        | sqlite:///$JOULESTREAM_HOME/control.db    |
| JOULESTREAM_TOPIC_PREFIX | prefix for every Kafka topic (tests)       | "" (none)                                 |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_KAFKA_PORT = 19092


@dataclass(frozen=True)
class Settings:
    home: Path
    kafka: str
    clickhouse: str
    ch_database: str
    database: str
    topic_prefix: str = ""
    kafka_embedded: bool = field(default=False)

    @property
    def raw_topic(self) -> str:
        return f"{self.topic_prefix}usage.raw.v1"

    @property
    def enriched_topic(self) -> str:
        return f"{self.topic_prefix}usage.enriched.v1"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_prefix}usage.dlq.v1"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from `env` (default: os.environ). Pure: no directories are created here."""
    e = os.environ if env is None else env
    home = Path(e.get("JOULESTREAM_HOME") or "./.joulestream").resolve()
    kafka = e.get("JOULESTREAM_KAFKA") or ""
    return Settings(
        home=home,
        kafka=kafka or f"127.0.0.1:{DEFAULT_KAFKA_PORT}",
        kafka_embedded=not kafka,
        clickhouse=e.get("JOULESTREAM_CLICKHOUSE") or f"chdb:///{home / 'warehouse'}",
        ch_database=e.get("JOULESTREAM_CH_DATABASE") or "joulestream",
        database=e.get("JOULESTREAM_DATABASE") or f"sqlite:///{home / 'control.db'}",
        topic_prefix=e.get("JOULESTREAM_TOPIC_PREFIX") or "",
    )
