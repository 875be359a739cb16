"""`groupbuy relay`: everything the event store holds for Kafka, published after commit."""

from __future__ import annotations

import threading

from infra import kafka_clients
from infra.app import OUTBOX_TABLE, open_app
from infra.outbox import OutboxPublisher
from infra.settings import Settings
from infra.topics import Topics, ensure_topics


def run_relay(settings: Settings, stop: threading.Event) -> None:
    """Publish outbox rows (order results, dead letters) until `stop` is set."""
    topics = Topics(settings.topic_prefix)
    admin = kafka_clients.admin(settings)
    ensure_topics(admin, topics, topics.ingest_topics())
    admin.close()
    open_app(settings).close()  # creates the tables on a fresh database
    producer = kafka_clients.producer(settings)
    try:
        OutboxPublisher(
            settings.database_url, settings.database_schema, OUTBOX_TABLE, producer
        ).run(stop)
    finally:
        producer.close()
