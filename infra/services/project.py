"""`groupbuy project`: keeps the read models in PostgreSQL from `groupbuy.campaign-events.v1`."""

from __future__ import annotations

import threading

from consumers.loop import TrackedLoop
from consumers.projector import ProjectorSink
from infra import kafka_clients
from infra.settings import Settings
from infra.topics import Topics, ensure_topics
from projections.read_models import ReadModelTables


def run_project(settings: Settings, stop: threading.Event) -> None:
    topics = Topics(settings.topic_prefix)
    admin = kafka_clients.admin(settings)
    ensure_topics(admin, topics, [topics.campaign_events])
    admin.close()
    sink = ProjectorSink(settings.database_url, ReadModelTables(settings.database_schema))
    consumer = kafka_clients.consumer(settings, "groupbuy-project")
    loop = TrackedLoop(consumer, sink)
    kafka_clients.subscribe(consumer, [topics.campaign_events], loop)
    try:
        loop.run(stop)
    finally:
        consumer.close(autocommit=False)
        sink.close()
