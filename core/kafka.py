"""Kafka plumbing shared by the edges (gateway, pollers, simulator) and the stream workers.

Tansu (the embedded broker) does not implement InitProducerId, so producers never use idempotence;
exactly-once *effect* comes from idempotent writes downstream (see warehouse/ledger.py).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from core.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 4  # settings.kafka_partitions' default
# Consumer-group timing tuned for Tansu, which holds each JoinGroup for half the session timeout:
# a 6 s session gives a first assignment in ~3 s instead of ~30 s with the 60 s default.
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_000


@dataclass(frozen=True)
class OutRecord:
    """A message to publish: key and value are already-serialised bytes."""

    key: bytes | None
    value: bytes


def topic_names(settings: Settings) -> list[str]:
    return [settings.raw_topic, settings.enriched_topic, settings.dlq_topic]


def producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    config: dict[str, object] = {
        "bootstrap_servers": settings.kafka,
        "enable_idempotence": False,  # Tansu: InitProducerId unsupported
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 1 << 20,
        "request_timeout_ms": 10_000,
    }
    config.update(overrides)
    return AIOKafkaProducer(**config)


async def ensure_topics(
    settings: Settings, partitions: int | None = None, timeout_s: float = 30
) -> list[str]:
    """Create the three pipeline topics if they do not exist, with `settings.kafka_partitions` partitions
    (unless `partitions` is given) and `settings.kafka_replication` replicas. Retries until the broker answers.
    Returns the topics this call created. An existing topic is left as it is (Kafka can add partitions, not
    remove them: `kafka-topics.sh --alter --partitions N`; keys then move to other partitions)."""
    partitions = partitions or settings.kafka_partitions
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka, request_timeout_ms=5_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topic_names(settings) if t not in existing]
            if missing:
                try:
                    await admin.create_topics(
                        [NewTopic(t, partitions, settings.kafka_replication) for t in missing]
                    )
                except TopicAlreadyExistsError:
                    pass
            return missing
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


def partition_for(key: bytes | None, partitions: Sequence[int], index: int) -> int:
    """CRC-32 of the key modulo the partition count; round-robin for null keys.

    Not Kafka's default murmur2: aiokafka's murmur2 is pure Python (~5–10 µs a key here, a tenth of the
    whole per-event budget), zlib.crc32 is C (~0.1 µs). Every joulestream producer partitions through
    this function, so all revisions of an event_id meet in one partition. Correctness does not depend on
    outside producers of usage.raw.v1 doing the same (the dedup window is only a first filter); the
    enriched topic, whose partitioning the sink's single-writer rule relies on, is written only here.
    """
    if key is None:
        return partitions[index % len(partitions)]
    return partitions[zlib.crc32(key) % len(partitions)]


async def send_many(prod: AIOKafkaProducer, topic: str, records: Iterable[OutRecord]) -> int:
    """Publish records with one produce request per partition batch and wait until all are acked.

    Messages stay one-per-event; only the transport is batched. Keys go through Kafka's default
    partitioner, so every revision of an event_id lands in the same partition (and so the same sink).
    """
    partitions = sorted(await prod.partitions_for(topic))
    batches: dict[int, object] = {}
    futures = []
    n = 0
    for i, rec in enumerate(records):
        part = partition_for(rec.key, partitions, i)
        batch = batches.get(part)
        if batch is None:
            batch = batches[part] = prod.create_batch()
        if batch.append(key=rec.key, value=rec.value, timestamp=None) is None:  # type: ignore[attr-defined]
            futures.append(await prod.send_batch(batch, topic, partition=part))  # type: ignore[arg-type]
            batch = batches[part] = prod.create_batch()
            if batch.append(key=rec.key, value=rec.value, timestamp=None) is None:  # type: ignore[attr-defined]
                raise ValueError(f"message of {len(rec.value)} bytes exceeds max_batch_size")
        n += 1
    for part, batch in batches.items():
        if batch.record_count():  # type: ignore[attr-defined]
            futures.append(await prod.send_batch(batch, topic, partition=part))  # type: ignore[arg-type]
    if futures:
        await asyncio.gather(*futures)
    return n


async def check_kafka(prod: AIOKafkaProducer, topic: str, timeout_s: float = 3.0) -> int:
    """Health check: the broker answers a metadata request for `topic`; returns its partition count."""
    partitions = await asyncio.wait_for(prod.partitions_for(topic), timeout_s)
    return len(partitions)
