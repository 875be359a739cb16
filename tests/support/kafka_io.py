"""Publishing to and reading from real topics in tests, with timeouts instead of sleeps."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from infra.settings import Settings


def publish(settings: Settings, topic: str, messages: Iterable[dict[str, Any] | bytes]) -> int:
    """Send JSON objects (or raw bytes) keyed by their campaign_id; the count sent."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    sent = 0
    for message in messages:
        if isinstance(message, bytes):
            producer.send(topic, key=b"raw", value=message)
        else:
            key = str(message.get("campaign_id", "")).encode()
            producer.send(topic, key=key, value=json.dumps(message).encode())
        sent += 1
    producer.flush()
    producer.close()
    return sent


def read_until(
    settings: Settings,
    topic: str,
    done: Callable[[list[ConsumerRecord]], bool],
    timeout: float = 60.0,
) -> list[ConsumerRecord]:
    """Every record of `topic` from the start, read until `done(records)` or the timeout."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(records) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def read_json(
    settings: Settings, topic: str, count: int, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """At least `count` JSON messages of `topic` (all that came, if fewer, after the timeout)."""
    records = read_until(settings, topic, lambda rs: len(rs) >= count, timeout)
    return [json.loads(r.value) for r in records]


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
