"""`groupbuy ingest`: every site's orders from Kafka into the event store, each answered by
its event."""

from __future__ import annotations

import threading
from contextlib import ExitStack

from kafka import KafkaConsumer

from consumers.ingest import IngestSink
from consumers.loop import TrackedLoop
from domain.application import GroupBuying
from infra.adapters import kafka_clients, metrics
from infra.adapters.app import ONE_USER, open_app
from infra.adapters.metrics import IngestMetrics
from infra.adapters.topics import Topics
from infra.settings import Settings

# One transaction per poll: 5,000 orders rather than 2,000 was 7 to 10 % faster with one
# process (docs/benchmarks.md, Ingest); a quiet topic gives small polls.
MAX_RECORDS = 5000


def run_ingest(settings: Settings, stop: threading.Event) -> None:
    """Apply orders until `stop` is set; `groupbuy relay` publishes the results.

    `groupbuy ingest --workers N` runs infra/ingest_workers.py instead.
    """
    with ExitStack() as cleanup:  # closes the app, then the consumer
        consumer, subscription, app = join_ingest_group(settings, cleanup)
        sink = IngestSink(app, Topics(settings.topic_prefix), IngestMetrics())
        loop = TrackedLoop(
            consumer,
            sink,
            max_records=MAX_RECORDS,
            saved=metrics.batch_saved("ingest"),
            lagging=metrics.lag_reporter("ingest"),
        )
        subscription.start(loop)
        loop.run(stop)


def join_ingest_group(
    settings: Settings, cleanup: ExitStack
) -> tuple[KafkaConsumer, kafka_clients.Subscription, GroupBuying]:
    """The ingest group's consumer of every site's orders topic, and the application;
    `cleanup` closes both, the application first.

    The consumer is made and subscribed first: it connects and learns of the topics in the
    background while the dead letters' topic and the tables are set up. The group is joined
    once the caller names its listener (`Subscription.start`) and polls. A site registered
    later is followed from the next metadata refresh (within `metadata_max_age_ms`, 10 s).
    """
    topics = Topics(settings.topic_prefix)
    consumer = kafka_clients.consumer(settings, "groupbuy-ingest", **kafka_clients.GATHERED_FETCHES)
    cleanup.callback(consumer.close, autocommit=False)
    subscription = kafka_clients.Subscription(consumer, pattern=topics.orders_pattern)
    kafka_clients.ensure_topics(settings, [topics.orders_dlq])
    app = open_app(settings, **ONE_USER)
    cleanup.callback(app.close)
    return consumer, subscription, app
