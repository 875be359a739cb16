"""groupbuy's consumers: subscribed at once, before the service has set itself up."""

from __future__ import annotations

from kafka import KafkaAdminClient

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
