"""The broker is a real Apache Kafka 4, with idempotent and transactional producers working."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic


def create_topic(admin: KafkaAdminClient, name: str, partitions: int = 1) -> str:
    admin.create_topics([NewTopic(name, partitions, 1)])
    admin.wait_for_topics([name])
    return name


def read_all(options: dict[str, Any], topic: str, isolation_level: str) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        **options,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        consumer_timeout_ms=3000,
    )
    try:
        return [record.value for record in consumer]
    finally:
        consumer.close()


def test_broker_speaks_apache_kafka_4_3(
    kafka_admin: KafkaAdminClient, report_version: Callable[[str, str], None]
) -> None:
    # kafka-python infers the release from the API versions the broker supports.
    api_version = kafka_admin._client.check_version()
    metadata_level = kafka_admin.describe_features()["metadata.version"]["finalized"][0]
    release = ".".join(map(str, api_version))
    report_version(
        "Kafka broker", f"Apache Kafka {release}, metadata.version level {metadata_level}"
    )
    assert api_version >= (4, 3)
    assert metadata_level >= 30  # 4.3-IV0, a level that only Kafka 4.3 and later define


def test_idempotent_producer_delivers_each_message_once(
    kafka_options: dict[str, Any], kafka_admin: KafkaAdminClient, topic_prefix: str
) -> None:
    topic = create_topic(kafka_admin, topic_prefix + "idempotent")
    producer = KafkaProducer(**kafka_options, enable_idempotence=True, acks="all")
    for n in range(100):
        producer.send(topic, key=b"k", value=str(n).encode())
    producer.flush()
    producer.close()

    received = read_all(kafka_options, topic, "read_uncommitted")

    assert received == [str(n).encode() for n in range(100)]


def test_read_committed_consumer_never_sees_aborted_messages(
    kafka_options: dict[str, Any], kafka_admin: KafkaAdminClient, topic_prefix: str
) -> None:
    topic = create_topic(kafka_admin, topic_prefix + "transactions", partitions=2)
    producer = KafkaProducer(**kafka_options, transactional_id=topic_prefix + "tx")
    producer.init_transactions()
    producer.begin_transaction()
    for key in (b"a", b"b"):
        producer.send(topic, key=key, value=b"aborted")
    producer.flush()
    producer.abort_transaction()
    producer.begin_transaction()
    for key in (b"a", b"b"):
        producer.send(topic, key=key, value=b"committed")
    producer.commit_transaction()
    producer.close()

    committed = read_all(kafka_options, topic, "read_committed")
    everything = read_all(kafka_options, topic, "read_uncommitted")

    assert committed == [b"committed", b"committed"]
    assert sorted(everything) == [b"aborted", b"aborted", b"committed", b"committed"]
