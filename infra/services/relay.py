"""`groupbuy relay`: what the event store holds for Kafka, published after it committed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
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
from psycopg.sql import SQL, Composed, Identifier, Literal

from consumers.order_results import event_result
from domain.application import GroupBuying
from domain.campaign import Campaign
from infra.adapters import kafka_clients, metrics
from infra.adapters.app import OUTBOX_TABLE, open_app, recorder_of
from infra.adapters.event_store import OUTBOX_CHANNEL, SCHEMA_LOCK, outbox_headers
from infra.adapters.table_follower import Connection, TableFollower
from infra.adapters.topic_limits import TopicLimits
from infra.adapters.topics import EVENT_MAX_BYTES, Topics
from infra.services.relay_progress import Message, Progress, ProgressLog
from infra.services.supervision import Task, run_together
from infra.settings import Settings
from projections.wire import MESSAGE_TYPES, encode

log = logging.getLogger(__name__)

BATCH = 2000  # rows or events published, then acknowledged, at a time
BACKLOG_EVERY = 2.0  # seconds between two measures of the backlog (the metrics)
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
    kafka_clients.ensure_topics(
        settings, [topics.orders_dlq, topics.campaign_events, topics.relay_progress]
    )
    app = open_app(settings)
    create_parking(app)
    schema = settings.database_schema
    limits = TopicLimits(settings)
    events = EventRelay(
        app,
        publisher_producer(settings, "campaign-events"),
        limits,
        ProgressLog(settings, "campaign-events"),
        topics.campaign_events,
        topics.site_results,
    )
    outbox = OutboxPublisher(
        schema,
        OUTBOX_TABLE,
        publisher_producer(settings, "outbox"),
        limits,
        ProgressLog(settings, "outbox"),
    )
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
    tasks: dict[str, Task] = {f.name: f.run for f in followers}
    tasks["relay-backlog"] = partial(
        measure_backlog, settings, events.count_unpublished, outbox.count
    )
    try:  # a follower that stops on its own stops the other, and the relay
        run_together(tasks, stop)
    finally:
        events.close()
        outbox.close()
        limits.close()
        app.close()


def measure_backlog(
    settings: Settings, events: Composed, outbox: Composed, stop: threading.Event
) -> None:
    """Every BACKLOG_EVERY seconds until `stop`, set the metrics of what waits for the relay:
    events not yet published, rows in the outbox. A failure is skipped (the followers say
    what is wrong with the database), never raised."""
    conn: psycopg.Connection[Any] | None = None
    while not stop.wait(0 if conn is None else BACKLOG_EVERY):
        try:
            if conn is None or conn.closed or conn.broken:
                conn = psycopg.connect(settings.postgres_conninfo, autocommit=True)
            metrics.relay_backlog(conn, events, outbox)
        except psycopg.Error as error:
            log.debug("the relay's backlog could not be measured: %s", error)
            stop.wait(BACKLOG_EVERY)
    if conn is not None:
        conn.close()


def publisher_producer(settings: Settings, publisher: str, **options: Any) -> NewProducer:
    """A transactional producer for one publisher, ready to begin a transaction. Its id is
    the same for every relay of this store and prefix: the one that takes the turn fences
    the one before (whose open transaction is aborted), so two never publish at once."""
    prefix, schema = settings.topic_prefix, settings.database_schema
    transactional_id = f"{prefix}groupbuy-relay.{schema}.{publisher}"

    def new_producer() -> KafkaProducer:
        producer = kafka_clients.transactional_producer(
            settings,
            transactional_id,
            **({"max_request_size": EVENT_MAX_BYTES, "linger_ms": 5} | options),
        )
        try:
            producer.init_transactions()
        except BaseException:
            close_quietly(producer)
            raise
        return producer

    return new_producer


class Publisher(Generic[Row]):
    """A batch of rows to Kafka, in transactions that say how far they got, then to the
    database: exactly once.

    Kafka holds the truth: each transaction carries a progress record (relay_progress.py).
    Whenever the publisher starts with a new producer (a start, a failure before), it first
    records in the database the last progress Kafka committed, so neither a kill nor a
    database failure between Kafka's commit and the database's sends anything again.
    """

    def __init__(
        self, new_producer: NewProducer, limits: TopicLimits, progress: ProgressLog
    ) -> None:
        self.sender = Sender(new_producer, limits, progress, self._messages, self._id)
        self.progress = progress

    def __call__(self, conn: Connection) -> int:
        if self.sender.producer is None:
            self.sender.open()  # a transaction a predecessor left open is aborted
            if (last := self.progress.last()) is not None:
                self._check_published(conn, last)
                self._record_once(conn, last)
        # Step 1. Read the rows after those recorded.
        rows = self._read(conn)
        if not rows:
            return 0
        # Step 2. Send them in transactions, each with its progress, and wait for the commit.
        verdicts = self.sender.publish(rows)
        # Step 3. Record the progress committed: park those Kafka refused, move past the rest.
        done = rows[: verdicts.stop]
        if done:
            self._record_once(conn, verdicts.progress(done, self._id))
        for index, error in verdicts.parked():
            log.error(
                "%s cannot be published and is parked in %s: %s",
                self._about(rows[index]),
                PARKED_TABLE,
                describe(error),
            )
        if verdicts.error is not None:
            raise verdicts.error  # the rows from there on are sent again after a backoff
        return len(done)

    def _record_once(self, conn: Connection, progress: Progress) -> None:
        try:
            with conn.transaction():
                self._record(conn, progress)
        except BaseException:
            self.sender.close()  # the next turn starts from what Kafka committed
            raise

    def _check_published(self, conn: Connection, progress: Progress) -> None:
        """Refuse Kafka's progress if it names rows the database never had."""

    def _read(self, conn: Connection) -> Sequence[Row]:
        raise NotImplementedError

    def _id(self, row: Row) -> int:
        raise NotImplementedError

    def _messages(self, row: Row) -> list[Message]:
        raise NotImplementedError

    def _record(self, conn: Connection, progress: Progress) -> None:
        """Within the caller's transaction: park what Kafka refused, record the rest. Done
        again with the same progress, it changes nothing."""
        raise NotImplementedError

    def _about(self, row: Row) -> str:
        raise NotImplementedError

    def close(self) -> None:
        self.sender.close()


class EventRelay(Publisher[Notification]):
    """Publishes every stored domain event to `groupbuy.campaign-events.v1`.

    It follows the notification log from the position it recorded. An event that answers an
    order message also goes to its site's `groupbuy.order-results.<site_id>.v1` as its
    result (`results_topic` names it), so ingestion
    stores one row per order, not an event and an outbox row. An event Kafka will never
    take is parked (PARKED_TABLE), and the position moves past it.
    """

    def __init__(
        self,
        app: GroupBuying,
        new_producer: NewProducer,
        limits: TopicLimits,
        progress: ProgressLog,
        topic: str,
        results_topic: Callable[[str], str],
    ) -> None:
        super().__init__(new_producer, limits, progress)
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
        events = Identifier(schema, recorder.events_table_name)
        self.select_last_stored = SQL("SELECT max(notification_id) FROM {}").format(events)
        self.sequence = f"{schema}.{recorder.events_table_name}_notification_id_seq"
        # Events in the store after the position (the metrics): notification ids have gaps
        # (rolled back inserts), so this counts them.
        self.count_unpublished = SQL(
            "SELECT count(*) FROM {} WHERE notification_id > coalesce("
            "(SELECT notification_id FROM {} WHERE application_name = {}), 0)"
        ).format(events, tracking, Literal(POSITION))
        self.store_position = SQL(
            "INSERT INTO {0} VALUES (%(name)s, %(id)s) ON CONFLICT (application_name) "
            "DO UPDATE SET notification_id = %(id)s WHERE {0}.notification_id < %(id)s"
        ).format(tracking)
        self.park = SQL(
            "INSERT INTO {} (notification_id, originator_id, originator_version, topic, error) "
            "SELECT notification_id, originator_id, originator_version, topic, %s FROM {} "
            "WHERE notification_id = %s"
        ).format(Identifier(schema, PARKED_TABLE), Identifier(schema, recorder.events_table_name))

    def _position(self, conn: Connection) -> int:
        row = conn.execute(self.select_position, (POSITION,)).fetchone()
        return int(row[0]) if row else 0

    def _check_published(self, conn: Connection, progress: Progress) -> None:
        """Every event Kafka says was published came from this store, so the store holds
        one with an id at least as large. If not, the database was restored to an instant
        before the relay's last publication: new events would take the ids of published
        ones, and recording Kafka's progress would skip them. Stop, naming the fix."""
        published = max(progress.done, default=0)
        (stored,) = conn.execute(self.select_last_stored).fetchone() or (None,)
        if published > (stored or 0):
            raise StoreBehindKafkaError(
                f"Kafka says the relay published events up to id {published}, but the event "
                f"store's last is {stored or 'none'}: was the database restored to an earlier "
                f"instant? Move its ids past the published ones, then start the relay again: "
                f"SELECT setval('{self.sequence}', {published}); (docs/operations.md, "
                f"PostgreSQL)"
            )

    def _read(self, conn: Connection) -> Sequence[Notification]:
        after = self._position(conn)
        return self.app.recorder.select_notifications(after, BATCH, inclusive_of_start=False)

    def _id(self, notification: Notification) -> int:
        return int(notification.id)

    def _record(self, conn: Connection, progress: Progress) -> None:
        last = max(progress.done, default=0)
        if self._position(conn) >= last:
            return  # recorded already
        for notification_id, error in progress.parked:
            conn.execute(self.park, (error, notification_id))
        conn.execute(self.store_position, {"name": POSITION, "id": last})

    def _about(self, notification: Notification) -> str:
        return (
            f"event {notification.id} ({notification.originator_id} "
            f"v{notification.originator_version}) for {self.topic}"
        )

    def _messages(self, notification: Notification) -> list[Message]:
        event = self.app.mapper.to_domain_event(notification)
        campaign_id = self._slug(UUID(str(notification.originator_id)), event)
        headers = [
            ("type", MESSAGE_TYPES[type(event)].encode()),
            ("version", str(notification.originator_version).encode()),
        ]
        key, value = campaign_id.encode(), encode(event, campaign_id)
        messages = [Message(self.topic, key, value, headers)]
        result = event_result(self.results_topic, campaign_id, event)
        if result is not None:
            messages.append(Message(result.topic, result.key, result.value))
        return messages

    def _slug(self, originator_id: UUID, event: object) -> str:
        """The campaign's slug: only its Opened event carries it, so remember it."""
        if originator_id not in self.slugs:
            if not isinstance(event, Campaign.Opened):
                (first,) = self.app.repository.event_store.get(originator_id, lte=1)
                event = first
            assert isinstance(event, Campaign.Opened)
            self.slugs[originator_id] = event.campaign_id
        return self.slugs[originator_id]


class StoreBehindKafkaError(RuntimeError):
    """Kafka holds events the event store does not: the relay must not go on."""


class OutboxPublisher(Publisher[OutboxRow]):
    """Publishes outbox rows (order results, dead letters), in order.

    It sends the oldest rows, then deletes them; a row Kafka will never take moves to the
    parking table (PARKED_TABLE) in the same database transaction. Rows are named by id, not
    by a position: a row with a smaller id may commit after one with a larger id.
    """

    def __init__(
        self,
        schema: str,
        table: str,
        new_producer: NewProducer,
        limits: TopicLimits,
        progress: ProgressLog,
    ) -> None:
        super().__init__(new_producer, limits, progress)
        qualified = Identifier(schema, table)
        self.select = SQL(
            "SELECT id, topic, key, value, headers FROM {} ORDER BY id LIMIT %s"
        ).format(qualified)
        self.delete = SQL("DELETE FROM {} WHERE id = ANY(%s)").format(qualified)
        self.count = SQL("SELECT count(*) FROM {}").format(qualified)
        self.park = SQL(
            "INSERT INTO {} (outbox_id, topic, key, value, headers, error) "
            "SELECT id, topic, key, value, headers, %s FROM {} WHERE id = %s"
        ).format(Identifier(schema, PARKED_TABLE), qualified)

    def _read(self, conn: Connection) -> Sequence[OutboxRow]:
        rows: list[OutboxRow] = conn.execute(self.select, (BATCH,)).fetchall()
        return rows

    def _id(self, row: OutboxRow) -> int:
        return row[0]

    def _record(self, conn: Connection, progress: Progress) -> None:
        for outbox_id, error in progress.parked:  # a row parked already is gone: no-op
            conn.execute(self.park, (error, outbox_id))
        conn.execute(self.delete, (progress.done,))

    def _about(self, row: OutboxRow) -> str:
        return f"outbox row {row[0]} for {row[1]}"

    def _messages(self, row: OutboxRow) -> list[Message]:
        _, topic, key, value, headers = row
        return [Message(topic, key, value, outbox_headers(headers))]


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

    def progress(self, done: Sequence[Row], row_id: Callable[[Row], int]) -> Progress:
        """The progress of the rows `done`, the first ones."""
        parked = [(row_id(done[i]), describe(e)) for i, e in self.parked() if i < len(done)]
        return Progress([row_id(row) for row in done], parked)


class Sender(Generic[Row]):
    """Sends rows in order, in Kafka transactions that carry their progress too, and finds
    the rows Kafka will never take.

    A row whose message is larger than its topic takes (asked of the brokers) is refused
    before it is sent. Kafka may still refuse one (its topic changed since): a transaction
    that failed is aborted whole, so its rows are sent again, in halves, each half in a
    transaction of its own, until a row that still fails has failed alone.
    """

    flush_timeout = 30.0  # seconds: a transaction not acknowledged by then has failed

    def __init__(
        self,
        new_producer: NewProducer,
        limits: TopicLimits,
        progress: ProgressLog,
        messages: Callable[[Row], list[Message]],
        row_id: Callable[[Row], int],
    ) -> None:
        self.new_producer = new_producer
        self.limits = limits
        self.progress = progress
        self.messages = messages
        self.row_id = row_id
        self.producer: KafkaProducer | None = None

    def open(self) -> KafkaProducer:
        if self.producer is None:
            self.producer = self.new_producer()
        return self.producer

    def publish(self, rows: Sequence[Row]) -> Verdicts:
        verdicts = Verdicts(len(rows))
        try:
            self._attempt(rows, range(len(rows)), verdicts)
        except BaseException:
            self.close()  # its transaction is aborted by the next producer's start
            raise
        return verdicts

    def close(self) -> None:
        if self.producer is not None:
            producer, self.producer = self.producer, None
            close_quietly(producer)

    def _attempt(self, rows: Sequence[Row], indices: Sequence[int], verdicts: Verdicts) -> None:
        """Send the rows at `indices` in one transaction; sort out the failures if it fails."""
        indices = [index for index in indices if index < verdicts.stop]
        if not indices:
            return
        producer = self.open()
        producer.begin_transaction()
        stop_before = verdicts.stop, verdicts.error
        sent = self._send_each(producer, rows, indices, verdicts)
        done = rows[: min(indices[-1] + 1, verdicts.stop)]
        if len(done) <= indices[0]:  # stopped at its first row: nothing to commit
            self.close()
            return
        reasons, hung = [], False
        try:
            progress = self.progress.message(verdicts.progress(done, self.row_id))
            sent.append(self._send_message(producer, progress))
            # kafka-python can wait for ever on a batch the broker refused among others in
            # a transaction: the flush times out, and the halves find the row.
            producer.flush(timeout=self.flush_timeout)
        except KafkaTimeoutError as error:
            reasons, hung = [error], True
        except KafkaError as error:  # a send failed: the transaction takes no more
            reasons.append(error)
        reasons += [why for future in sent if (why := failure(future)) is not None]
        if reasons:
            # A send that failed fails those after it: the stop they gave is not theirs.
            verdicts.stop, verdicts.error = stop_before
            self.close()  # the next producer's start aborts the transaction
            self._sort_out(rows, indices, reasons, verdicts, hung=hung)
        else:
            kafka_clients.commit_within(producer)

    def _send_each(
        self,
        producer: KafkaProducer,
        rows: Sequence[Row],
        indices: Sequence[int],
        verdicts: Verdicts,
    ) -> list[Future]:
        """Send each row's messages; a row refused at once is parked, and an error of no
        row's own (Kafka away) stops the sending there."""
        sent: list[Future] = []
        for index in indices:
            try:  # free unless raised (Python 3.11): the happy path costs nothing more
                messages = self._deliverable(self.messages(rows[index]))
            except Exception as error:  # a row that cannot be encoded, or is too large
                if not is_refusal(error):
                    verdicts.stop_at(index, error)
                    break
                verdicts.park(index, error)
                continue
            before = len(sent)
            try:
                sent.extend(self._send_message(producer, message) for message in messages)
            except Exception as error:  # no metadata for its topic in time, ...
                # A row half sent cannot be taken back: then the transaction stops whole.
                verdicts.stop_at(index if len(sent) == before else indices[0], error)
                break
        return sent

    def _deliverable(self, messages: list[Message]) -> list[Message]:
        """The messages with a topic to go to, each within what its topic takes; one for an
        unregistered site's topic is left out (TopicLimits), one too large refuses the row."""
        kept = []
        for message in messages:
            limit = self.limits.of(message.topic)
            if limit is None:
                continue
            if message.size() > limit:
                raise MessageSizeTooLargeError(
                    f"a message of {message.size()} bytes for {message.topic}, "
                    f"which takes {limit} bytes (max.message.bytes)"
                )
            kept.append(message)
        return kept

    @staticmethod
    def _send_message(producer: KafkaProducer, message: Message) -> Future:
        return producer.send(
            message.topic,
            key=message.key,
            value=message.value,
            headers=message.headers,
            partition=message.partition,
        )

    def _sort_out(
        self,
        rows: Sequence[Row],
        indices: list[int],
        reasons: list[BaseException],
        verdicts: Verdicts,
        *,
        hung: bool,
    ) -> None:
        """A transaction that failed is aborted whole. A row that failed alone is refused,
        or stops the publishing there, as does Kafka away; else the halves are sent again."""
        refusals = [reason for reason in reasons if isinstance(reason, REFUSALS)]
        retriable = not hung and not refusals and all(map(is_retriable, reasons))
        if len(indices) == 1 and refusals:
            verdicts.park(indices[0], refusals[0])
        elif len(indices) == 1 or retriable:
            verdicts.stop_at(indices[0], reasons[0])
        else:
            half = (len(indices) + 1) // 2
            for part in (indices[:half], indices[half:]):
                self._attempt(rows, part, verdicts)


def failure(future: Future) -> BaseException | None:
    """Why a send failed, after a flush; None if Kafka acknowledged it."""
    if future.exception is not None:
        return cast(BaseException, future.exception)
    if not future.is_done:
        unanswered: BaseException = KafkaTimeoutError("no acknowledgement after a flush")
        return unanswered
    return None


def close_quietly(producer: KafkaProducer) -> None:
    """Close a producer that may be failing: what it still holds is abandoned, and a
    transaction it left open is aborted by the next producer with its id."""
    with suppress(Exception):
        producer.close(timeout=5, null_logger=True)


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
