"""Publishes every stored domain event to `groupbuy.campaign-events.v1`, at least once.

An event that answers an order message also goes to `groupbuy.order-results.v1` as its
result, so ingestion stores one row per order, not an event and an outbox row.
"""

from __future__ import annotations

from uuid import UUID

from kafka import KafkaProducer
from psycopg.sql import SQL, Identifier

from consumers.order_results import event_result
from domain.application import GroupBuying
from domain.campaign import Campaign
from infra.app import recorder_of
from infra.follower import Connection
from infra.kafka_clients import confirm
from projections.wire import MESSAGE_TYPES, encode

BATCH = 2000
POSITION = "relay:campaign-events"


class EventRelay:
    """Follows the notification log from the position it stored after Kafka acknowledged."""

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
