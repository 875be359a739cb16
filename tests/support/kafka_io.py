"""Publishing to and reading from real topics in tests, with timeouts instead of sleeps."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.protocol.producer.produce import ProduceRequest
from kafka.record.memory_records import MemoryRecordsBuilder

from infra.adapters import kafka_clients
from infra.adapters.topics import Topics
from infra.settings import Settings
from tests.support.builders import SITES

Topic = str | list[str]  # one topic, or several read as one


def site_client(settings: Settings) -> dict[str, Any]:
    """How a site's own client (not groupbuy's factory) reaches the brokers: with the
    credentials in `settings`, when they are secured."""
    return {"bootstrap_servers": settings.kafka_bootstrap} | (
        settings.kafka_security.client_options()
    )


def make_site_topics(settings: Settings, sites: Iterable[str] = SITES) -> None:
    """Each site's three topics and the dead letters', as `groupbuy site add` makes them."""
    topics = Topics(settings.topic_prefix)
    names = [name for site in sites for name in topics.site_topics(site)]
    kafka_clients.ensure_topics(settings, [*names, topics.orders_dlq])


def results_topics(settings: Settings, sites: Iterable[str] = SITES) -> list[str]:
    return [Topics(settings.topic_prefix).site_results(site) for site in sites]


def buyers_topics(settings: Settings, sites: Iterable[str] = SITES) -> list[str]:
    return [Topics(settings.topic_prefix).site_buyer_settlements(site) for site in sites]


def publish_orders(
    settings: Settings, messages: Iterable[dict[str, Any] | bytes], site: str | None = None
) -> int:
    """Send order messages as their sites would: each to the orders topic of `site`, or
    without one, of the site it names (raw bytes, and a message naming no usable site, to
    the first test site's). The count sent."""
    topics = Topics(settings.topic_prefix)
    by_topic: dict[str, list[dict[str, Any] | bytes]] = {}
    for message in messages:
        named = None if isinstance(message, bytes) else message.get("site_id")
        owner = site or (named if named in SITES else SITES[0])
        by_topic.setdefault(topics.site_orders(owner), []).append(message)
    return sum(publish(settings, topic, batch) for topic, batch in by_topic.items())


def publish(settings: Settings, topic: str, messages: Iterable[dict[str, Any] | bytes]) -> int:
    """Send JSON objects (or raw bytes) keyed by their campaign_id; the count sent."""
    producer = KafkaProducer(**site_client(settings), acks="all", linger_ms=5)
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
    topic: Topic,
    done: Callable[[list[ConsumerRecord]], bool],
    timeout: float = 60.0,
) -> list[ConsumerRecord]:
    """Every record of `topic` (or of each topic of a list) from the start, read until
    `done(records)` or the timeout. A topic not made yet is made first, so that the reader
    follows it from the start."""
    names = [topic] if isinstance(topic, str) else topic
    kafka_clients.ensure_topics(settings, names)
    consumer = KafkaConsumer(
        *names,
        **site_client(settings),
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
    settings: Settings, topic: Topic, count: int, timeout: float = 60.0
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


def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` came true within `timeout`; the assertions after it say what is
    missing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def produce_raw(
    admin: KafkaAdminClient,
    topic: str,
    partition: int,
    key: bytes | None,
    value: bytes,
    headers: Any,
) -> tuple[int, int]:
    """One record as a produce request of its own, built with kafka-python's record builder:
    a header with a null value, which Kafka has (a Java producer sends one) but kafka-python's
    send() refuses. (offset, broker append time in ms)."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=int(time.time() * 1000), key=key, value=value, headers=headers)
    builder.close()
    data = ProduceRequest.TopicProduceData.PartitionProduceData(
        index=partition, records=builder.buffer()
    )
    request = ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=10_000,
        topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[data])],
        min_version=3,
        max_version=9,
    )

    # To the partition's leader: on a cluster, another broker answers NOT_LEADER.
    (described,) = admin.describe_topics([topic])
    (leader,) = [
        p["leader_id"] for p in described["partitions"] if p["partition_index"] == partition
    ]

    async def send() -> Any:
        return await admin._manager.send(request, node_id=leader)

    (answer,) = admin._manager.run(send).responses[0].partition_responses
    assert answer.error_code == 0, answer
    return int(answer.base_offset), int(answer.log_append_time_ms)
