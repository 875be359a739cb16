"""`groupbuy settle`: a closed campaign's purchase order and buyer settlements, exactly once."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from kafka import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from psycopg.sql import SQL, Identifier

from consumers.batch import OutboxMessage
from consumers.loop import Lagging, LagReport
from consumers.projector import UnappliableRecordError
from consumers.settlement import settlement_messages
from domain.application import GroupBuying
from domain.errors import UnknownCampaignError
from domain.outcomes import CloseOutcome
from infra.adapters import kafka_clients, metrics
from infra.adapters.app import open_app
from infra.adapters.logs import where
from infra.adapters.topic_limits import TopicLimits
from infra.adapters.topics import Topics
from infra.settings import Settings
from projections.live import check
from projections.wire import decode

log = logging.getLogger(__name__)
# Kafka or PostgreSQL away, or a topic Kafka will not create or does not know yet (the
# RuntimeErrors of infra/adapters/kafka_clients.py): start again from the committed offsets.
RETRYABLE = (KafkaError, PersistenceError, psycopg.Error, RuntimeError)
PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before the 1st, 2nd, ... start again
# A campaign's messages go in one transaction. Sending 1,000,000 buyer settlements of 230
# bytes took 140 s on a loaded two-core machine with the local broker (14 s for 200,000):
# the broker allows up to 900 s (transaction.max.timeout.ms), kafka-python asks for 60 s.
TRANSACTION_TIMEOUT_MS = 300_000
# Loading, sending and committing a big campaign happens between two polls.
MAX_POLL_INTERVAL_MS = 600_000
POLL_BUDGET = 60.0  # seconds of settling on one poll before polling again
POLL_RECORDS = 500


def transactional_id(settings: Settings) -> str:
    """The same for every start of this settle instance, so that a restart fences the
    transaction its predecessor left open (init_transactions aborts it) and `read_committed`
    readers do not wait for the broker to time it out. Two settle processes on one host (two
    `groupbuy settle`, or one beside `groupbuy run`) need different GROUPBUY_INSTANCE: with
    one id, each start fences the other."""
    instance = os.environ.get("GROUPBUY_INSTANCE") or socket.gethostname()
    return f"{settings.topic_prefix}groupbuy-settle.{settings.database_schema}.{instance}"


class Settled:
    """Campaigns already settled, so a redelivered `campaign.closed` settles nothing twice.

    Asked of the database each time, since other settle instances record there too. Recorded
    after the Kafka transaction commits: a crash in between, followed by a second copy of the
    same event from the relay, would publish it again under the same purchase_order_id. A
    record the database cannot take yet (it is restarting) is kept, and written first next
    time; the connection is opened again when it broke.
    """

    def __init__(self, settings: Settings) -> None:
        self.conninfo = settings.postgres_conninfo
        self.table = Identifier(settings.database_schema, "groupbuying_settled")
        self.conn: psycopg.Connection[Any] | None = None
        self.unrecorded: list[str] = []
        self._connection().execute(
            SQL("CREATE TABLE IF NOT EXISTS {} (campaign_id text PRIMARY KEY)").format(self.table)
        )

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def has(self, campaign_id: str) -> bool:
        if campaign_id in self.unrecorded:
            return True
        query = SQL("SELECT 1 FROM {} WHERE campaign_id = %s").format(self.table)
        return self._connection().execute(query, (campaign_id,)).fetchone() is not None

    def add(self, campaign_id: str) -> None:
        self.unrecorded.append(campaign_id)
        self.record()

    def record(self) -> None:
        """Write what is kept; a database still away keeps it for next time."""
        insert = SQL("INSERT INTO {} VALUES (%s) ON CONFLICT DO NOTHING RETURNING 1").format(
            self.table
        )
        while self.unrecorded:
            campaign_id = self.unrecorded[0]
            try:
                first = self._connection().execute(insert, (campaign_id,)).fetchone()
            except psycopg.Error as error:
                log.warning(
                    "cannot record %s as settled yet: %s",
                    campaign_id,
                    error,
                    extra=where(campaign=campaign_id),
                )
                return
            if first is None:
                log.warning(
                    "%s was settled by another settle instance too",
                    campaign_id,
                    extra=where(campaign=campaign_id),
                )
            self.unrecorded.pop(0)

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(self.conninfo, autocommit=True)
        return self.conn


def run_settle(settings: Settings, stop: threading.Event) -> None:
    topics = Topics(settings.topic_prefix)
    kafka_clients.ensure_topics(settings, [topics.campaign_events])
    app = open_app(settings)
    settled = Settled(settings)
    lagging = metrics.lag_reporter("settle")
    failures = 0
    try:
        while not stop.is_set():
            settler = Settler(settings, app, settled, lagging)
            try:
                settler.run(stop)
            except RETRYABLE as error:
                failures = 1 if settler.committed else failures + 1
                pause = PAUSES[min(failures, len(PAUSES)) - 1]
                # The open transaction is aborted; the next start fences it in any case.
                log.warning("settle: %r; starting again in %.0f s", error, pause)
                stop.wait(pause)
    finally:
        settled.close()
        app.close()


class Settler:
    """One run of settle's clients: from the committed offsets until stopped or failed."""

    consumer: KafkaConsumer
    producer: KafkaProducer
    limits: TopicLimits

    def __init__(
        self, settings: Settings, app: GroupBuying, settled: Settled, lagging: Lagging
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.app = app
        self.settled = settled
        self.lagging = lagging
        self.committed = 0  # transactions committed in this run

    def run(self, stop: threading.Event) -> None:
        # Every client is closed however the run ends: an outage must not leak one a retry.
        with ExitStack() as clients:
            self.consumer = kafka_clients.consumer(
                self.settings, "groupbuy-settle", max_poll_interval_ms=MAX_POLL_INTERVAL_MS
            )
            clients.callback(self.consumer.close, autocommit=False)
            self.producer = kafka_clients.transactional_producer(
                self.settings,
                transactional_id(self.settings),
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            )
            clients.callback(self.producer.close, timeout=10)
            self.limits = TopicLimits(self.settings)
            clients.callback(self.limits.close)
            self.producer.init_transactions()
            self.settled.record()
            report_lag = LagReport(self.lagging)
            kafka_clients.subscribe(
                self.consumer, [self.topics.campaign_events], Joined(report_lag)
            )
            while not stop.is_set():
                polled = self.consumer.poll(timeout_ms=200, max_records=POLL_RECORDS)
                if polled:
                    self._settle(polled)
                report_lag(self.consumer)

    def _settle(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Each closed campaign in a transaction of its own, with the offsets read up to it;
        the offsets of the other records in one last transaction."""
        started = time.monotonic()
        records = [record for batch in polled.values() for record in batch]
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for index, record in enumerate(records):
            if time.monotonic() - started > POLL_BUDGET:
                # Poll again before the group takes this member for dead.
                self._read_again(records[index:])
                break
            closed = self._closed_campaign(record)
            partition = TopicPartition(record.topic, record.partition)
            offsets[partition] = OffsetAndMetadata(record.offset + 1, "", -1)
            if closed is not None:
                campaign_id, outcome, messages = closed
                self._commit(messages, offsets)
                metrics.CAMPAIGNS_SETTLED.labels(outcome).inc()
                if outcome == CloseOutcome.SUCCEEDED and messages:  # the supplier's first
                    metrics.PURCHASE_ORDERS.inc()
                self.settled.add(campaign_id)
                offsets = {}
        if offsets:
            self._commit([], offsets)

    def _commit(
        self, messages: list[OutboxMessage], offsets: dict[TopicPartition, OffsetAndMetadata]
    ) -> None:
        # Step 1. Begin. Step 2. Send the messages. Step 3. Add the consumed offsets.
        # Step 4. Commit: a `read_committed` reader sees all of it, or (aborted) none.
        self.producer.begin_transaction()
        try:
            for message in messages:
                self.producer.send(message.topic, key=message.key, value=message.value)
            # Sent first, for as long as the transaction may last: the steps after are
            # bounded more tightly (a stalled coordinator), and a commit would flush too.
            self.producer.flush(timeout=TRANSACTION_TIMEOUT_MS / 1000)
            kafka_clients.send_offsets_within(
                self.producer, offsets, self.consumer.group_metadata()
            )
            kafka_clients.commit_within(self.producer)
        except BaseException:
            # A fenced or stalled producer cannot abort; its successor's start does.
            with suppress(KafkaError):
                kafka_clients.abort_within(self.producer)
            metrics.SETTLE_TRANSACTIONS.labels("aborted").inc()
            raise
        metrics.SETTLE_TRANSACTIONS.labels("committed").inc()
        self.committed += 1

    def _closed_campaign(
        self, record: ConsumerRecord
    ) -> tuple[str, str, list[OutboxMessage]] | None:
        """A `campaign.closed` not settled yet: its campaign_id, its outcome and the messages
        it asks for."""
        with _unappliable(record):
            event = decode(record.value)
            if event.type != "campaign.closed":
                return None
            check(event)  # before its campaign_id goes to the database
            if self.settled.has(event.campaign_id):
                return None
            self.app.forget(event.campaign_id)  # read the campaign as stored, commitments and all
            try:
                campaign = self.app.get_campaign(event.campaign_id)
            except UnknownCampaignError:
                raise ValueError(f"the event store has no campaign {event.campaign_id!r}") from None
            if campaign.closing is None:
                raise ValueError(f"{event.campaign_id} is not closed in the event store")
            supplier_topic = self.topics.settlements(campaign.definition.supplier_id)
            buyers_topic = self.topics.site_buyer_settlements
            messages = settlement_messages(campaign, supplier_topic, buyers_topic)
            # A supplier's or a site's topic is made when it registers (the supplier's also
            # when its campaign opens); one missing is made now, but an unregistered site's,
            # which nobody could read, is not: its settlements stay in the event store.
            wanted = [m for m in messages if self.limits.of(m.topic) is not None]
            return event.campaign_id, event.fields["outcome"], wanted

    def _read_again(self, records: list[ConsumerRecord]) -> None:
        """Seek each partition back to the first of `records` it has."""
        first: dict[TopicPartition, int] = {}
        for record in records:
            first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
        for partition, offset in first.items():
            self.consumer.seek(partition, offset)


class Joined(ConsumerRebalanceListener):  # type: ignore[misc]
    """Starts the lag's reports once the group has assigned this member its partitions
    (maybe none)."""

    def __init__(self, report_lag: LagReport) -> None:
        self.report_lag = report_lag

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.report_lag.joined = True

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass


@contextmanager
def _unappliable(record: ConsumerRecord) -> Iterator[None]:
    """A record settle cannot apply, as an UnappliableRecordError naming it; an outage as is."""
    try:
        yield
    except RETRYABLE:
        raise
    except Exception as error:  # a forged or broken event: stop, never skip, never loop
        raise UnappliableRecordError(
            record.topic, record.partition, record.offset, f"{type(error).__name__}: {error}"
        ) from error
