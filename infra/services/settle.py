"""`groupbuy settle`: a closed campaign's purchase order and buyer settlements, exactly once."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import psycopg
from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from psycopg.sql import SQL, Identifier

from consumers.settlement import settlement_messages
from domain.application import GroupBuying
from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.settings import Settings
from projections.wire import decode

log = logging.getLogger(__name__)


class Settled:
    """Campaigns already settled, so a redelivered `campaign.closed` settles nothing twice.

    Written after the Kafka transaction commits: a crash in between, followed by a second
    copy of the same event from the relay, would publish it again under the same
    purchase_order_id.
    """

    def __init__(self, settings: Settings) -> None:
        self.conn = psycopg.connect(settings.database_url, autocommit=True)
        self.table = Identifier(settings.database_schema, "groupbuying_settled")
        self.conn.execute(
            SQL("CREATE TABLE IF NOT EXISTS {} (campaign_id text PRIMARY KEY)").format(self.table)
        )
        rows = self.conn.execute(SQL("SELECT campaign_id FROM {}").format(self.table))
        self.campaign_ids = {row[0] for row in rows}

    def add(self, campaign_ids: list[str]) -> None:
        if campaign_ids:
            self.conn.cursor().executemany(
                SQL("INSERT INTO {} VALUES (%s) ON CONFLICT DO NOTHING").format(self.table),
                [(c,) for c in campaign_ids],
            )
            self.campaign_ids.update(campaign_ids)


def run_settle(settings: Settings, stop: threading.Event) -> None:
    topics = Topics(settings.topic_prefix)
    admin = kafka_clients.admin(settings)
    kafka_clients.create_topics(admin, topics, [topics.campaign_events, topics.buyer_settlements])
    app = open_app(settings)
    settled = Settled(settings)
    try:
        while not stop.is_set():
            try:
                Settler(settings, app, admin, settled).run(stop)
            except KafkaError as error:
                # The open transaction is aborted with the producer; start again from the
                # offsets the last committed transaction stored.
                log.warning("settle: %s; restarting from the committed offsets", error)
                stop.wait(1.0)
    finally:
        settled.conn.close()
        admin.close()
        app.close()


class Settler:
    def __init__(self, settings: Settings, app: GroupBuying, admin: Any, settled: Settled) -> None:
        self.topics = Topics(settings.topic_prefix)
        self.app = app
        self.admin = admin
        self.settled = settled
        self.supplier_topics: set[str] = set()
        self.consumer = kafka_clients.consumer(settings, "groupbuy-settle")
        self.producer = kafka_clients.transactional_producer(
            settings, f"{settings.topic_prefix}groupbuy-settle-{uuid.uuid4().hex}"
        )

    def run(self, stop: threading.Event) -> None:
        self.producer.init_transactions()
        kafka_clients.subscribe(self.consumer, [self.topics.campaign_events], None)
        try:
            while not stop.is_set():
                polled = self.consumer.poll(timeout_ms=200, max_records=500)
                if polled:
                    self._settle(polled)
        finally:
            self.consumer.close(autocommit=False)
            self.producer.close()

    def _settle(self, polled: dict[TopicPartition, list[Any]]) -> None:
        self.producer.begin_transaction()
        settled_now: list[str] = []
        for records in polled.values():
            for record in records:
                settled_now += self._messages_for(record.value, settled_now)
        offsets = {tp: OffsetAndMetadata(rs[-1].offset + 1, "", -1) for tp, rs in polled.items()}
        self.producer.send_offsets_to_transaction(offsets, self.consumer.group_metadata())
        self.producer.commit_transaction()
        self.settled.add(settled_now)

    def _messages_for(self, value: bytes, settled_now: list[str]) -> list[str]:
        """Send what a `campaign.closed` asks for; the campaign ids settled."""
        try:
            event = decode(value)
        except (ValueError, KeyError, TypeError) as error:
            log.error("unreadable campaign event skipped: %s", error)
            return []
        campaign_id = event.campaign_id
        if event.type != "campaign.closed":
            return []
        if campaign_id in self.settled.campaign_ids or campaign_id in settled_now:
            return []  # a redelivered copy of the event
        self.app.forget(campaign_id)  # read the campaign as stored, commitments and all
        campaign = self.app.get_campaign(campaign_id)
        supplier_topic = self.topics.settlements(campaign.definition.supplier_id)
        if supplier_topic not in self.supplier_topics:
            kafka_clients.create_topics(self.admin, self.topics, [supplier_topic])
            self.supplier_topics.add(supplier_topic)
        for message in settlement_messages(campaign, supplier_topic, self.topics.buyer_settlements):
            self.producer.send(message.topic, key=message.key, value=message.value)
        return [campaign_id]
