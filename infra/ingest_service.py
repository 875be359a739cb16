"""`groupbuy ingest`: orders from Kafka into the event store, results out through the outbox."""

from __future__ import annotations

import threading

from consumers.ingest import IngestSink
from consumers.loop import TrackedLoop
from infra import kafka_clients
from infra.app import OUTBOX_TABLE, open_app
from infra.outbox import OutboxPublisher
from infra.settings import Settings
from infra.topics import Topics, ensure_topics


def run_ingest(settings: Settings, stop: threading.Event) -> None:
    topics = Topics(settings.topic_prefix)
    admin = kafka_clients.admin(settings)
    ensure_topics(admin, topics, topics.ingest_topics())
    admin.close()
    app = open_app(settings)
    producer = kafka_clients.producer(settings)
    publisher = OutboxPublisher(
        settings.database_url, settings.database_schema, OUTBOX_TABLE, producer
    )
    publishing = threading.Thread(target=publisher.run, args=(stop,), name="outbox")
    publishing.start()
    consumer = kafka_clients.consumer(settings, "groupbuy-ingest")
    loop = TrackedLoop(consumer, IngestSink(app, topics.order_results, topics.orders_dlq))
    consumer.subscribe([topics.orders], listener=loop)
    try:
        loop.run(stop)
    finally:
        stop.set()
        consumer.close(autocommit=False)
        publishing.join()
        producer.close()
        app.close()
