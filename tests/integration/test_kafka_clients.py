"""groupbuy's consumers: subscribed at once, before the service has set itself up."""

from __future__ import annotations

from kafka import KafkaAdminClient

from infra import kafka_clients
from infra.settings import Settings
from infra.topics import Topics, ensure_topics, partitions_from_env


def test_a_subscription_backs_off_briefly_until_its_topics_are_known_then_as_configured(
    settings: Settings, kafka_admin: KafkaAdminClient
) -> None:
    topics = Topics(settings.topic_prefix)
    ensure_topics(kafka_admin, topics, [topics.orders])
    consumer = kafka_clients.consumer(settings, "groupbuy-test")
    try:
        subscription = kafka_clients.Subscription(consumer, [topics.orders])
        # None would mean kafka-python moved its metadata settings: the work-around is gone.
        assert subscription.metadata is not None
        assert subscription.metadata["retry_backoff_ms"] == kafka_clients.STARTING_BACKOFF_MS

        subscription.start(None)

        assert consumer.partitions_for_topic(topics.orders) == set(range(partitions_from_env()))
        assert subscription.metadata["retry_backoff_ms"] == consumer.config["retry_backoff_ms"]
    finally:
        consumer.close()
