"""`groupbuy relay`: what the event store holds for Kafka, published after it committed."""

from __future__ import annotations

import threading

from infra import kafka_clients
from infra.app import OUTBOX_TABLE, open_app, recorder_of
from infra.event_relay import EventRelay
from infra.follower import TableFollower
from infra.outbox import OutboxPublisher
from infra.settings import Settings
from infra.store import OUTBOX_CHANNEL
from infra.topics import Topics, ensure_topics


def run_relay(settings: Settings, stop: threading.Event) -> None:
    """Publish campaign events, the results they give, and outbox rows until `stop`."""
    topics = Topics(settings.topic_prefix)
    admin = kafka_clients.admin(settings)
    ensure_topics(admin, topics, [*topics.ingest_topics(), topics.campaign_events])
    admin.close()
    app = open_app(settings)
    producer = kafka_clients.producer(settings)
    schema = settings.database_schema
    followers = [
        TableFollower(
            settings.database_url,
            f"{schema}.campaign-events",
            recorder_of(app).channel_name,
            EventRelay(app, producer, topics.campaign_events, topics.order_results),
        ),
        TableFollower(
            settings.database_url,
            f"{schema}.outbox",
            OUTBOX_CHANNEL,
            OutboxPublisher(schema, OUTBOX_TABLE, producer),
        ),
    ]
    threads = [threading.Thread(target=f.run, args=(stop,), name=f.name) for f in followers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    producer.close()
    app.close()
