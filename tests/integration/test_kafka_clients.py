"""groupbuy's consumers: subscribed at once, before the service has set itself up."""

from __future__ import annotations

import time

from kafka import KafkaAdminClient, KafkaConsumer

from infra.adapters import kafka_clients
from infra.adapters.topics import Topics, partitions_from_env
from infra.settings import Settings


def test_a_subscription_backs_off_briefly_until_its_topics_are_known_then_as_configured(
    settings: Settings, kafka_admin: KafkaAdminClient
) -> None:
    topics = Topics(settings.topic_prefix)
    kafka_clients.create_topics(kafka_admin, topics, [topics.site_orders("site-a")])
    consumer = kafka_clients.consumer(settings, "groupbuy-test")
    try:
        metadata = kafka_clients.metadata_settings(consumer)
        # None would mean kafka-python moved its metadata settings: the work-around is gone.
        assert metadata is not None
        subscription = kafka_clients.Subscription(consumer, [topics.site_orders("site-a")])
        assert metadata["retry_backoff_ms"] == kafka_clients.STARTING_BACKOFF_MS

        subscription.start(None)

        assert consumer.partitions_for_topic(topics.site_orders("site-a")) == set(
            range(partitions_from_env())
        )
        assert metadata["retry_backoff_ms"] == consumer.config["retry_backoff_ms"]
    finally:
        consumer.close()


def test_a_reader_learns_its_topics_before_it_is_given_partitions(
    settings: Settings, kafka_admin: KafkaAdminClient
) -> None:
    topics = Topics(settings.topic_prefix)
    kafka_clients.create_topics(kafka_admin, topics, [topics.site_orders("site-a")])
    consumer = kafka_clients.consumer(settings, None)
    try:
        kafka_clients.know_topics(consumer, [topics.site_orders("site-a")])

        # What it knows already: the consumer's own partitions_for_topic would ask Kafka.
        known = consumer._cluster.partitions_for_topic(topics.site_orders("site-a"))
        assert known == set(range(partitions_from_env()))
        metadata = kafka_clients.metadata_settings(consumer)
        assert metadata is not None
        assert metadata["retry_backoff_ms"] == consumer.config["retry_backoff_ms"]
    finally:
        consumer.close()


def test_a_member_polling_briefly_is_given_its_partitions_and_a_new_topics_too(
    settings: Settings, kafka_admin: KafkaAdminClient
) -> None:
    # A poll shorter than a JoinGroup and SyncGroup round trip: what a loaded machine does
    # to the services' 0.2 s polls. kafka-python 3.0.12 alone never assigns anything here
    # (infra/adapters/kafka_joins.py).
    topics = Topics(settings.topic_prefix)
    site_a, site_b = topics.site_orders("site-a"), topics.site_orders("site-b")
    kafka_clients.create_topics(kafka_admin, topics, [site_a])
    consumer = kafka_clients.consumer(settings, "groupbuy-test", metadata_max_age_ms=500)
    try:
        subscription = kafka_clients.Subscription(consumer, pattern=topics.orders_pattern)
        subscription.start(None)

        first = polled_until_assigned(consumer, {site_a})
        # The member leads a rebalance of its own making: a topic matching its pattern.
        kafka_clients.create_topics(kafka_admin, topics, [site_b])
        second = polled_until_assigned(consumer, {site_a, site_b})

        assert first == {site_a}
        assert second == {site_a, site_b}
    finally:
        consumer.close()


def polled_until_assigned(consumer: KafkaConsumer, wanted: set[str]) -> set[str]:
    """The topics assigned to `consumer` once they are `wanted`, polling 5 ms at a time,
    or after 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        consumer.poll(timeout_ms=5)
        assigned = {partition.topic for partition in consumer.assignment()}
        if assigned == wanted:
            break
    return assigned
