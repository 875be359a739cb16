"""`groupbuy relay`: what the event store holds for Kafka, published after it committed."""

from __future__ import annotations

import threading
from uuid import UUID

from kafka import KafkaProducer
from psycopg.sql import SQL, Identifier

from consumers.order_results import event_result
from domain.application import GroupBuying
from domain.campaign import Campaign
from infra.adapters import kafka_clients
from infra.adapters.app import OUTBOX_TABLE, open_app, recorder_of
from infra.adapters.event_store import OUTBOX_CHANNEL
from infra.adapters.kafka_clients import confirm
from infra.adapters.table_follower import Connection, TableFollower
from infra.adapters.topics import Topics
from infra.settings import Settings
from projections.wire import MESSAGE_TYPES, encode

BATCH = 2000  # rows or events published, then acknowledged, at a time
POSITION = "relay:campaign-events"  # the tracking row of the events published


def run_relay(settings: Settings, stop: threading.Event) -> None:
    """Publish campaign events, the results they give, and outbox rows until `stop`."""
    topics = Topics(settings.topic_prefix)
    kafka_clients.ensure_topics(settings, [*topics.ingest_topics(), topics.campaign_events])
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


class EventRelay:
    """Publishes every stored domain event to `groupbuy.campaign-events.v1`, at least once.

    It follows the notification log from the position it stored after Kafka acknowledged.
    An event that answers an order message also goes to `groupbuy.order-results.v1` as its
    result, so ingestion stores one row per order, not an event and an outbox row.
    """

    def __init__(
        self, app: GroupBuying, producer: KafkaProducer, topic: str, results_topic: str
    ) -> None:
        self.app = app
        self.producer = producer
        self.topic = topic
        self.results_topic = results_topic
        self.slugs: dict[UUID, str] = {}
        recorder = recorder_of(app)
        tracking = Identifier(recorder.datastore.schema, recorder.tracking_table_name)
        self.select_position = SQL(
            "SELECT notification_id FROM {} WHERE application_name = %s"
        ).format(tracking)
        self.store_position = SQL(
            "INSERT INTO {0} VALUES (%(name)s, %(id)s) ON CONFLICT (application_name) "
            "DO UPDATE SET notification_id = %(id)s WHERE {0}.notification_id < %(id)s"
        ).format(tracking)

    def __call__(self, conn: Connection) -> int:
        row = conn.execute(self.select_position, (POSITION,)).fetchone()
        after = row[0] if row else 0
        notifications = self.app.recorder.select_notifications(
            after, BATCH, inclusive_of_start=False
        )
        if not notifications:
            return 0
        futures = []
        for notification in notifications:
            event = self.app.mapper.to_domain_event(notification)
            campaign_id = self._slug(UUID(str(notification.originator_id)), event)
            headers = [
                ("type", MESSAGE_TYPES[type(event)].encode()),
                ("version", str(notification.originator_version).encode()),
            ]
            futures.append(
                self.producer.send(
                    self.topic,
                    key=campaign_id.encode(),
                    value=encode(event, campaign_id),
                    headers=headers,
                )
            )
            result = event_result(self.results_topic, campaign_id, event)
            if result is not None:
                futures.append(self.producer.send(result.topic, key=result.key, value=result.value))
        confirm(self.producer, futures)
        conn.execute(self.store_position, {"name": POSITION, "id": notifications[-1].id})
        return len(notifications)

    def _slug(self, originator_id: UUID, event: object) -> str:
        """The campaign's slug: only its Opened event carries it, so remember it."""
        if originator_id not in self.slugs:
            if not isinstance(event, Campaign.Opened):
                (first,) = self.app.repository.event_store.get(originator_id, lte=1)
                event = first
            assert isinstance(event, Campaign.Opened)
            self.slugs[originator_id] = event.campaign_id
        return self.slugs[originator_id]


class OutboxPublisher:
    """Publishes outbox rows (order results, dead letters): at least once, in order.

    It sends the oldest rows, waits for Kafka's acks, then deletes them.
    """

    def __init__(self, schema: str, table: str, producer: KafkaProducer) -> None:
        self.producer = producer
        qualified = Identifier(schema, table)
        self.select = SQL(
            "SELECT id, topic, key, value, headers FROM {} ORDER BY id LIMIT %s"
        ).format(qualified)
        self.delete = SQL("DELETE FROM {} WHERE id = ANY(%s)").format(qualified)

    def __call__(self, conn: Connection) -> int:
        rows = conn.execute(self.select, (BATCH,)).fetchall()
        if not rows:
            return 0
        futures = [
            self.producer.send(
                topic,
                key=key,
                value=value,
                headers=[(name, bytes.fromhex(hexed)) for name, hexed in headers],
            )
            for _, topic, key, value, headers in rows
        ]
        confirm(self.producer, futures)
        conn.execute(self.delete, ([row[0] for row in rows],))
        return len(rows)
