"""`groupbuy project`: keeps the read models in PostgreSQL from `groupbuy.campaign-events.v1`."""

from __future__ import annotations

import threading

from consumers.loop import TrackedLoop
from consumers.projector import ProjectorSink
from infra.adapters import kafka_clients, metrics
from infra.adapters.topics import Topics
from infra.settings import Settings
from projections.read_models import ReadModelTables


def run_project(settings: Settings, stop: threading.Event) -> None:
    topics = Topics(settings.topic_prefix)
    kafka_clients.ensure_topics(settings, [topics.campaign_events])
    sink = ProjectorSink(settings.postgres_conninfo, ReadModelTables(settings.database_schema))
    consumer = kafka_clients.consumer(settings, "groupbuy-project")
    loop = TrackedLoop(
        consumer,
        sink,
        saved=metrics.batch_saved("project"),
        lagging=metrics.lag_reporter("project"),
    )
    kafka_clients.subscribe(consumer, [topics.campaign_events], loop)
    try:
        loop.run(stop)
    finally:
        consumer.close(autocommit=False)
        sink.close()
