"""`groupbuy relay`: what the event store holds for Kafka, published after it committed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Generic, TypeVar, cast
from uuid import UUID

import psycopg
from eventsourcing.persistence import Notification, PersistenceError
from kafka import KafkaProducer
from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from psycopg.sql import SQL, Identifier

from consumers.order_results import event_result
from domain.application import GroupBuying
from domain.campaign import Campaign
from infra.adapters import kafka_clients
from infra.adapters.app import OUTBOX_TABLE, open_app, recorder_of
from infra.adapters.event_store import OUTBOX_CHANNEL, SCHEMA_LOCK, outbox_headers
from infra.adapters.table_follower import Connection, TableFollower
from infra.adapters.topics import EVENT_MAX_BYTES, Topics
from infra.services.supervision import run_together
from infra.settings import Settings
from projections.wire import MESSAGE_TYPES, encode

log = logging.getLogger(__name__)

BATCH = 2000  # rows or events published, then acknowledged, at a time
POSITION = "relay:campaign-events"  # the tracking row of the events published
# Where rows Kafka will never take are kept, beside the outbox (groupbuying_parked).
PARKED_TABLE = OUTBOX_TABLE.removesuffix("_outbox") + "_parked"
# What Kafka says of a record it will never take, from whoever sends it: its row is parked.
REFUSALS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    CorruptRecordError,
)
MAX_ERROR_TEXT = 2000  # characters of an error kept with a parked row

Row = TypeVar("Row")
Future = Any  # kafka-python's FutureRecordMetadata
NewProducer = Callable[[], KafkaProducer]
OutboxRow = tuple[int, str, bytes | None, bytes, list[list[str]]]


def run_relay(settings: Settings, stop: threading.Event) -> None:
    """Publish campaign events, the results they give, and outbox rows until `stop`."""
    topics = Topics(settings.topic_prefix)
    kafka_clients.ensure_topics(settings, [*topics.ingest_topics(), topics.campaign_events])
    app = open_app(settings)
    create_parking(app)
    schema = settings.database_schema
    # A producer each, replaced after a failed send (`Sender`), for the largest message.
    new_producer = partial(kafka_clients.producer, settings, max_request_size=EVENT_MAX_BYTES)
    events = EventRelay(app, new_producer, topics.campaign_events, topics.order_results)
    outbox = OutboxPublisher(schema, OUTBOX_TABLE, new_producer)
    followers = [
        TableFollower(
            settings.database_url,
            f"{schema}.campaign-events",
            recorder_of(app).channel_name,
            events,
        ),
        TableFollower(
            settings.database_url,
            f"{schema}.outbox",
            OUTBOX_CHANNEL,
            outbox,
        ),
    ]
    try:  # a follower that stops on its own stops the other, and the relay
        run_together({f.name: f.run for f in followers}, stop)
    finally:
        events.close()
        outbox.close()
        app.close()


class Publisher(Generic[Row]):
    """A batch of rows to Kafka, then their progress to the database, at least once.

    Rows Kafka acknowledged but the database did not yet record (it failed in between) are
    kept and recorded first on the next turn, so a database restart sends nothing again.
    """

    def __init__(self, new_producer: NewProducer) -> None:
        self.sender = Sender(new_producer, self._send)
        self.unrecorded: tuple[Sequence[Row], list[tuple[Row, BaseException]]] | None = None

    def __call__(self, conn: Connection) -> int:
        if self.unrecorded is not None:
            self._record_once(conn, *self.unrecorded)
        # Step 1. Read the rows after those recorded.
        rows = self._read(conn)
        if not rows:
            return 0
        # Step 2. Send them, and wait for Kafka's acknowledgements.
        verdicts = self.sender.publish(rows)
        # Step 3. Park those Kafka refused, and record the progress up to the last one done.
        done = rows[: verdicts.stop]
        parked = [(rows[i], error) for i, error in verdicts.parked()]
        if done:
            self.unrecorded = (done, parked)
            self._record_once(conn, done, parked)
        for row, error in parked:
            log.error(
                "%s cannot be published and is parked in %s: %s",
                self._about(row),
                PARKED_TABLE,
                describe(error),
            )
        if verdicts.error is not None:
            raise verdicts.error  # the rows from there on are sent again after a backoff
        return len(done)

    def _record_once(
        self, conn: Connection, done: Sequence[Row], parked: list[tuple[Row, BaseException]]
    ) -> None:
        with conn.transaction():
            self._record(conn, done, parked)
        self.unrecorded = None

    def _read(self, conn: Connection) -> Sequence[Row]:
        raise NotImplementedError

    def _send(self, producer: KafkaProducer, row: Row) -> list[Future]:
        raise NotImplementedError

    def _record(
        self, conn: Connection, done: Sequence[Row], parked: list[tuple[Row, BaseException]]
    ) -> None:
        """Within the caller's transaction: park what Kafka refused, record the rest."""
        raise NotImplementedError

    def _about(self, row: Row) -> str:
        raise NotImplementedError

    def close(self) -> None:
        self.sender.close()


class EventRelay(Publisher[Notification]):
    """Publishes every stored domain event to `groupbuy.campaign-events.v1`, at least once.

    It follows the notification log from the position it stored after Kafka acknowledged.
    An event that answers an order message also goes to `groupbuy.order-results.v1` as its
    result, so ingestion stores one row per order, not an event and an outbox row. An event
    Kafka will never take is parked (PARKED_TABLE), and the position moves past it.
    """

    def __init__(
        self, app: GroupBuying, new_producer: NewProducer, topic: str, results_topic: str
    ) -> None:
        super().__init__(new_producer)
        self.app = app
        self.topic = topic
        self.results_topic = results_topic
        self.slugs: dict[UUID, str] = {}
        recorder = recorder_of(app)
        schema = recorder.datastore.schema
        tracking = Identifier(schema, recorder.tracking_table_name)
        self.select_position = SQL(
            "SELECT notification_id FROM {} WHERE application_name = %s"
        ).format(tracking)
        self.store_position = SQL(
            "INSERT INTO {0} VALUES (%(name)s, %(id)s) ON CONFLICT (application_name) "
            "DO UPDATE SET notification_id = %(id)s WHERE {0}.notification_id < %(id)s"
        ).format(tracking)
        self.park = SQL(
            "INSERT INTO {} (notification_id, originator_id, originator_version, topic, error) "
            "VALUES (%s, %s, %s, %s, %s)"
        ).format(Identifier(schema, PARKED_TABLE))

    def _read(self, conn: Connection) -> Sequence[Notification]:
        row = conn.execute(self.select_position, (POSITION,)).fetchone()
        after = row[0] if row else 0
        return self.app.recorder.select_notifications(after, BATCH, inclusive_of_start=False)

    def _record(
        self,
        conn: Connection,
        done: Sequence[Notification],
        parked: list[tuple[Notification, BaseException]],
    ) -> None:
        for notification, error in parked:
            conn.execute(self.park, self._parked_row(notification, error))
        conn.execute(self.store_position, {"name": POSITION, "id": done[-1].id})

    def _about(self, notification: Notification) -> str:
        return (
            f"event {notification.id} ({notification.originator_id} "
            f"v{notification.originator_version}) for {self.topic}"
        )

    def _send(self, producer: KafkaProducer, notification: Notification) -> list[Future]:
        event = self.app.mapper.to_domain_event(notification)
        campaign_id = self._slug(UUID(str(notification.originator_id)), event)
        headers = [
            ("type", MESSAGE_TYPES[type(event)].encode()),
            ("version", str(notification.originator_version).encode()),
        ]
        key, value = campaign_id.encode(), encode(event, campaign_id)
        result = event_result(self.results_topic, campaign_id, event)
        futures = [producer.send(self.topic, key=key, value=value, headers=headers)]
        if result is not None:
            futures.append(producer.send(result.topic, key=result.key, value=result.value))
        return futures

    def _parked_row(self, notification: Notification, error: BaseException) -> tuple[Any, ...]:
        return (
            notification.id,
            notification.originator_id,
            notification.originator_version,
            notification.topic,
            describe(error),
        )

    def _slug(self, originator_id: UUID, event: object) -> str:
        """The campaign's slug: only its Opened event carries it, so remember it."""
        if originator_id not in self.slugs:
            if not isinstance(event, Campaign.Opened):
                (first,) = self.app.repository.event_store.get(originator_id, lte=1)
                event = first
            assert isinstance(event, Campaign.Opened)
            self.slugs[originator_id] = event.campaign_id
        return self.slugs[originator_id]


class OutboxPublisher(Publisher[OutboxRow]):
    """Publishes outbox rows (order results, dead letters): at least once, in order.

    It sends the oldest rows, waits for Kafka's acks, then deletes them; a row Kafka will
    never take moves to the parking table (PARKED_TABLE) in the same transaction.
    """

    def __init__(self, schema: str, table: str, new_producer: NewProducer) -> None:
        super().__init__(new_producer)
        qualified = Identifier(schema, table)
        self.select = SQL(
            "SELECT id, topic, key, value, headers FROM {} ORDER BY id LIMIT %s"
        ).format(qualified)
        self.delete = SQL("DELETE FROM {} WHERE id = ANY(%s)").format(qualified)
        self.park = SQL(
            "INSERT INTO {} (outbox_id, topic, key, value, headers, error) "
            "SELECT id, topic, key, value, headers, %s FROM {} WHERE id = %s"
        ).format(Identifier(schema, PARKED_TABLE), qualified)

    def _read(self, conn: Connection) -> Sequence[OutboxRow]:
        rows: list[OutboxRow] = conn.execute(self.select, (BATCH,)).fetchall()
        return rows

    def _record(
        self,
        conn: Connection,
        done: Sequence[OutboxRow],
        parked: list[tuple[OutboxRow, BaseException]],
    ) -> None:
        for row, error in parked:
            conn.execute(self.park, (describe(error), row[0]))
        conn.execute(self.delete, ([row[0] for row in done],))

    def _about(self, row: OutboxRow) -> str:
        return f"outbox row {row[0]} for {row[1]}"

    def _send(self, producer: KafkaProducer, row: OutboxRow) -> list[Future]:
        _, topic, key, value, headers = row
        return [
            producer.send(
                topic,
                key=key,
                value=value,
                headers=outbox_headers(headers),
            )
        ]


class Verdicts:
    """What became of rows sent in order: those Kafka will never take (to be parked), and
    the first row not published (`stop`), with the error that stopped it there."""

    def __init__(self, rows: int) -> None:
        self.stop = rows
        self.error: BaseException | None = None
        self.refused: dict[int, BaseException] = {}

    def park(self, index: int, error: BaseException) -> None:
        self.refused[index] = error

    def stop_at(self, index: int, error: BaseException) -> None:
        if index < self.stop:
            self.stop, self.error = index, error

    def parked(self) -> list[tuple[int, BaseException]]:
        """The rows to park, before `stop`; those after it are sent again next time."""
        return sorted((i, error) for i, error in self.refused.items() if i < self.stop)


class Sender(Generic[Row]):
    """Sends rows in order, each as its messages, and finds the rows Kafka will never take.

    kafka-python's idempotent producer fails every send after one the broker refused (a
    message too large for its topic), whatever its topic: a failed send does not say which
    row is to blame. So the producer is replaced, and the rows that failed are sent again
    in halves, until a row that still fails has failed alone, on a fresh producer.
    """

    def __init__(
        self, new_producer: NewProducer, send: Callable[[KafkaProducer, Row], list[Future]]
    ) -> None:
        self.new_producer = new_producer
        self.send = send
        self.producer: KafkaProducer | None = None

    def publish(self, rows: Sequence[Row]) -> Verdicts:
        verdicts = Verdicts(len(rows))
        try:
            self._attempt(rows, range(len(rows)), verdicts)
        except BaseException:
            self.close()  # it may be failing every send now
            raise
        return verdicts

    def close(self) -> None:
        if self.producer is not None:
            producer, self.producer = self.producer, None
            producer.close(timeout=5)

    def _attempt(self, rows: Sequence[Row], indices: Sequence[int], verdicts: Verdicts) -> None:
        """Send the rows at `indices` together, wait for Kafka, and sort out the failures."""
        if self.producer is None:
            self.producer = self.new_producer()
        sent = self._send_each(self.producer, rows, indices, verdicts)
        self.producer.flush()
        failed = [(i, reason) for i, futures in sent if (reason := failure(futures)) is not None]
        if failed:
            self.close()
            self._sort_out(rows, failed, verdicts, alone=len(sent) == 1)

    def _send_each(
        self,
        producer: KafkaProducer,
        rows: Sequence[Row],
        indices: Sequence[int],
        verdicts: Verdicts,
    ) -> list[tuple[int, list[Future]]]:
        sent = []
        for index in indices:
            if index >= verdicts.stop:
                break
            try:  # free unless raised (Python 3.11): the happy path costs nothing more
                sent.append((index, self.send(producer, rows[index])))
            except Exception as error:  # a row that cannot be encoded, or is refused at once
                if is_refusal(error):
                    verdicts.park(index, error)
                else:
                    verdicts.stop_at(index, error)
        return sent

    def _sort_out(
        self,
        rows: Sequence[Row],
        failed: list[tuple[int, BaseException]],
        verdicts: Verdicts,
        *,
        alone: bool,
    ) -> None:
        """A row whose send failed alone is refused, or stops the publishing there; rows that
        failed together are sent again, in halves."""
        suspects = []
        for index, reason in failed:
            if alone and isinstance(reason, REFUSALS):
                verdicts.park(index, reason)
            elif alone or is_retriable(reason):
                verdicts.stop_at(index, reason)
            else:
                suspects.append(index)
        half = (len(suspects) + 1) // 2
        for part in (suspects[:half], suspects[half:]):
            if part:
                self._attempt(rows, part, verdicts)


def failure(futures: list[Future]) -> BaseException | None:
    """Why one of a row's sends failed, after a flush; None if Kafka acknowledged them all."""
    for future in futures:
        if future.exception is not None:
            return cast(BaseException, future.exception)
        if not future.is_done:
            unanswered: BaseException = KafkaTimeoutError("no acknowledgement after a flush")
            return unanswered
    return None


def is_refusal(error: BaseException) -> bool:
    """Whether an error raised while sending a row is the row's own: it could not be encoded
    (OverflowError, UnicodeError, an unknown event type, ...), or the client refuses it as
    too large. Errors of the event store or of Kafka's availability are nobody's row."""
    if isinstance(error, KafkaError):
        return isinstance(error, REFUSALS)
    return not isinstance(error, psycopg.Error | PersistenceError)


def is_retriable(error: BaseException) -> bool:
    return isinstance(error, KafkaError) and bool(error.retriable)


def describe(error: BaseException) -> str:
    """The error on one line that a text column and a log take: no NUL, no lone surrogate."""
    text, name = " ".join(str(error).split()), type(error).__name__
    line = (text if name in text else f"{name}: {text}").replace("\x00", "\\x00")
    return line.encode("utf-8", "backslashreplace").decode()[:MAX_ERROR_TEXT]


def create_parking(app: GroupBuying) -> None:
    """Create the parking table (PARKED_TABLE) beside the event store's tables, unless there."""
    recorder = recorder_of(app)
    table = Identifier(recorder.datastore.schema, PARKED_TABLE)
    with recorder.datastore.transaction(commit=True) as curs:
        # As the recorder creates its tables: relays starting together would race.
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        curs.execute(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, "
                "parked_at timestamptz NOT NULL DEFAULT now(), "
                "notification_id bigint, originator_id uuid, originator_version bigint, "
                "outbox_id bigint, topic text NOT NULL, key bytea, value bytea, headers jsonb, "
                "error text NOT NULL)"
            ).format(table)
        )
