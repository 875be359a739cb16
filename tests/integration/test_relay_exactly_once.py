"""A relay that dies after Kafka committed a batch, before the database recorded it, sends
nothing again: the next one records what Kafka's progress topic says first."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from kafka.admin import ConfigResource, ConfigResourceType
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

from domain.outcomes import Order
from infra.adapters import kafka_clients
from infra.adapters.app import OUTBOX_TABLE, open_app, recorder_of
from infra.adapters.topic_limits import TopicLimits
from infra.adapters.topics import MESSAGE_MAX_BYTES, Topics
from infra.services.relay import (
    PARKED_TABLE,
    POSITION,
    EventRelay,
    OutboxPublisher,
    Publisher,
    create_parking,
    publisher_producer,
)
from infra.services.relay_progress import Progress, ProgressLog
from infra.settings import Settings
from tests.support.builders import campaign
from tests.support.kafka_io import make_site_topics, read_until

ROWS = 10
SHRUNK = {"max.message.bytes": "4096"}  # less than one batch of small records (16 KiB)


class Killed(Exception):
    """Where a kill -9 would have stopped the relay: Kafka committed, the database not."""


def dying(publisher: Publisher[Any]) -> None:
    """Make `publisher` fail the first time it records its progress in the database."""
    record = publisher._record

    def record_or_die(conn: Any, progress: Progress) -> None:
        publisher._record = record  # type: ignore[method-assign]
        raise Killed

    publisher._record = record_or_die  # type: ignore[method-assign]


def outbox_publisher(settings: Settings) -> OutboxPublisher:
    return OutboxPublisher(
        settings.database_schema,
        OUTBOX_TABLE,
        publisher_producer(settings, "outbox"),
        TopicLimits(settings),
        ProgressLog(settings, "outbox"),
    )


def event_relay(settings: Settings, app: Any) -> EventRelay:
    topics = Topics(settings.topic_prefix)
    return EventRelay(
        app,
        publisher_producer(settings, "campaign-events"),
        TopicLimits(settings),
        ProgressLog(settings, "campaign-events"),
        topics.campaign_events,
        topics.site_results,
    )


def test_outbox_rows_kafka_committed_are_not_sent_again_by_the_next_relay(
    settings: Settings,
) -> None:
    topics = Topics(settings.topic_prefix)
    make_site_topics(settings, ["site-a"])
    kafka_clients.ensure_topics(settings, [topics.relay_progress])
    app = open_app(settings)
    create_parking(app)
    schema = settings.database_schema
    outbox, parked = Identifier(schema, OUTBOX_TABLE), Identifier(schema, PARKED_TABLE)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        insert = SQL("INSERT INTO {} (topic, key, value, headers) VALUES (%s, %s, %s, %s)")
        for n in range(ROWS):
            value = b"x" * (MESSAGE_MAX_BYTES + 1) if n == 3 else f"result-{n}".encode()
            conn.execute(
                insert.format(outbox), (topics.site_results("site-a"), b"k", value, Jsonb([]))
            )
        first = outbox_publisher(settings)
        dying(first)
        with pytest.raises(Killed):
            first(conn)
        left_by_the_dead = count(conn, outbox)
        first.sender.producer = None  # killed: it closes nothing

        second = outbox_publisher(settings)
        published_again = second(conn)
        second.close()
        left = count(conn, outbox)
        parked_rows = conn.execute(SQL("SELECT outbox_id, error FROM {}").format(parked))
        parked_rows = parked_rows.fetchall()
    app.close()
    results = read_until(settings, topics.site_results("site-a"), lambda rs: False, timeout=3)

    assert left_by_the_dead == ROWS
    assert published_again == 0
    assert left == 0
    assert Counter(r.value for r in results) == Counter(
        f"result-{n}".encode() for n in range(ROWS) if n != 3
    )
    ((_, error),) = parked_rows
    assert "MessageSizeTooLargeError" in error


def test_events_kafka_committed_are_not_sent_again_by_the_next_relay(
    settings: Settings, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    make_site_topics(settings, ["site-a"])
    kafka_clients.ensure_topics(settings, [topics.campaign_events, topics.relay_progress])
    app = open_app(settings)
    create_parking(app)
    campaign_id = f"once-{unique}"
    now = datetime.now(UTC)
    app.open_campaign(campaign(campaign_id, max_per_buyer=None), now)
    for n in range(ROWS):
        app.place_order(campaign_id, Order(f"o-{n}", "site-a", f"b-{n}", 1, None, None), now)
    last = app.recorder.max_notification_id()
    tracking = Identifier(settings.database_schema, recorder_of(app).tracking_table_name)
    position = SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(tracking)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        first = event_relay(settings, app)
        dying(first)
        with pytest.raises(Killed):
            first(conn)
        recorded_by_the_dead = conn.execute(position, (POSITION,)).fetchone()
        first.sender.producer = None  # killed: it closes nothing

        second = event_relay(settings, app)
        published_again = second(conn)
        second.close()
        recorded = conn.execute(position, (POSITION,)).fetchone()
    app.close()
    events = read_until(settings, topics.campaign_events, lambda rs: False, timeout=3)
    results = read_until(settings, topics.site_results("site-a"), lambda rs: False, timeout=1)

    assert recorded_by_the_dead is None
    assert published_again == 0
    assert recorded == (last,)
    versions = [json.loads(r.value)["version"] for r in events]
    assert versions == list(range(1, ROWS + 2))
    answered = [json.loads(r.value)["order_id"] for r in results]
    assert sorted(answered) == sorted(f"o-{n}" for n in range(ROWS))


def count(conn: psycopg.Connection[Any], table: Identifier) -> int:
    row = conn.execute(SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    return int(row[0]) if row else -1


def test_a_row_its_topic_stopped_taking_since_is_parked_and_the_rest_go_once(
    settings: Settings, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    topic = f"{settings.topic_prefix}groupbuy.shrinking.v1"
    kafka_clients.ensure_topics(settings, [topic, topics.relay_progress])
    app = open_app(settings)
    create_parking(app)
    schema = settings.database_schema
    outbox, parked = Identifier(schema, OUTBOX_TABLE), Identifier(schema, PARKED_TABLE)
    insert = SQL("INSERT INTO {} (topic, key, value, headers) VALUES (%s, %s, %s, %s)")
    publisher = outbox_publisher(settings)
    # kafka-python waits for ever on a transaction's batch the broker refused among others:
    # the relay gives up on it after this long, and sends the rows again in halves.
    publisher.sender.flush_timeout = 2.0
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(insert.format(outbox), (topic, b"k", b"before", Jsonb([])))
        assert publisher(conn) == 1  # the relay knows the topic's limit now: 1 MiB
        with kafka_clients.admin(settings) as admin:
            shrink = ConfigResource(ConfigResourceType.TOPIC, topic, configs=SHRUNK)
            admin.alter_configs([shrink])
        for n in range(ROWS):
            value = b"x" * 5000 if n == 6 else f"small-{n}".encode()
            conn.execute(insert.format(outbox), (topic, b"k", value, Jsonb([])))
        published = publisher(conn)
        publisher.close()
        left = count(conn, outbox)
        parked_rows = conn.execute(SQL("SELECT length(value), error FROM {}").format(parked))
        parked_rows = parked_rows.fetchall()
    app.close()
    sent = read_until(settings, topic, lambda rs: False, timeout=3)

    assert published == ROWS
    assert left == 0
    assert Counter(r.value for r in sent) == Counter(
        [b"before", *(f"small-{n}".encode() for n in range(ROWS) if n != 6)]
    )
    ((length, error),) = parked_rows
    assert length == 5000
    assert "MessageSizeTooLargeError" in error


def test_each_store_reads_its_own_progress_back(settings: Settings) -> None:
    topics = Topics(settings.topic_prefix)
    kafka_clients.ensure_topics(settings, [topics.relay_progress])
    other_store = replace(settings, database_schema=settings.database_schema + "_other")
    ours, theirs = ProgressLog(settings, "outbox"), ProgressLog(other_store, "outbox")
    nothing_yet = ours.last()
    producer = publisher_producer(settings, "outbox")()
    for log, progress in [
        (ours, Progress([1, 2, 3], [(2, "too large")])),
        (theirs, Progress([7], [])),
    ]:
        producer.begin_transaction()
        message = log.message(progress)
        producer.send(message.topic, key=message.key, value=message.value, partition=1)
        producer.commit_transaction()
    producer.close()

    assert nothing_yet is None
    assert ours.last() == Progress([1, 2, 3], [(2, "too large")])
    assert theirs.last() == Progress([7], [])
