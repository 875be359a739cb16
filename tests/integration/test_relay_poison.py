"""A stored row Kafka will never take is parked: it holds up nothing and is never re-sent."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import psycopg
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

from domain.campaign import Campaign
from domain.outcomes import Order
from infra.adapters import kafka_clients
from infra.adapters.app import OUTBOX_TABLE, open_app, recorder_of
from infra.adapters.topic_limits import TopicLimits
from infra.adapters.topics import DEAD_LETTER_MAX_BYTES, EVENT_MAX_BYTES, MiB, Topics
from infra.services.relay import (
    PARKED_TABLE,
    OutboxPublisher,
    create_parking,
    publisher_producer,
    run_relay,
)
from infra.services.relay_progress import ProgressLog
from infra.settings import Settings
from tests.support.builders import campaign
from tests.support.kafka_io import make_site_topics, read_until, wait_for
from tests.support.pipeline import running

MARKER = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # a placed_at to find in the stored row
YEAR_1_EAST = "0001-01-01T00:00:00+14:00"  # no UTC form: it would be year 0
RESULTS_BEFORE, RESULTS_AFTER = 5, 5


class Store:
    """The test's event store and outbox, written as a bug or an older version could have."""

    def __init__(self, settings: Settings) -> None:
        self.app = open_app(settings)
        recorder = recorder_of(self.app)
        schema = settings.database_schema
        self.events = Identifier(schema, recorder.events_table_name)
        self.outbox = Identifier(schema, OUTBOX_TABLE)
        self.parked = Identifier(schema, PARKED_TABLE)
        self.conn = psycopg.connect(settings.database_url, autocommit=True)

    def place(self, campaign_id: str, n: int, placed_at: datetime | None = None) -> None:
        order = Order(f"o-{n}", "site-a", f"b-{n}", 1, None, placed_at)
        assert self.app.place_order(campaign_id, order, datetime.now(UTC)).recorded

    def rewrite_placed_at(self, campaign_id: str, version: int, text: str) -> None:
        """Give a stored event the placed_at `text`, as ingestion once stored any instant."""
        changed = self.conn.execute(
            SQL(
                "UPDATE {} SET state = convert_to(replace(convert_from(state, 'UTF8'), %s, %s), "
                "'UTF8') WHERE originator_id = %s AND originator_version = %s "
                "AND position(%s in convert_from(state, 'UTF8')) > 0"
            ).format(self.events),
            (
                MARKER.isoformat(),
                text,
                Campaign.create_id(campaign_id),
                version,
                MARKER.isoformat(),
            ),
        )
        assert changed.rowcount == 1

    def insert_event(self, topic: str, state: bytes) -> None:
        """A campaign's first event, stored as it is given."""
        self.conn.execute(
            SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state) "
                "VALUES (%s, 1, %s, %s)"
            ).format(self.events),
            (uuid.uuid4(), topic, state),
        )

    def opened_state(self, campaign_id: str) -> dict[str, Any]:
        row = self.conn.execute(
            SQL("SELECT state FROM {} WHERE originator_id = %s AND originator_version = 1").format(
                self.events
            ),
            (Campaign.create_id(campaign_id),),
        ).fetchone()
        assert row is not None
        state: dict[str, Any] = json.loads(bytes(row[0]))
        return state

    def insert_outbox(self, topic: str, key: bytes, value: bytes) -> None:
        self.conn.execute(
            SQL("INSERT INTO {} (topic, key, value, headers) VALUES (%s, %s, %s, %s)").format(
                self.outbox
            ),
            (topic, key, value, Jsonb([["source.topic", b"orders".hex()]])),
        )

    def parked_rows(self) -> list[tuple[Any, ...]]:
        """The parked rows, oldest first (none while the relay has not made its table)."""
        try:
            return self.conn.execute(
                SQL(
                    "SELECT notification_id, outbox_id, topic, length(value), error FROM {} "
                    "ORDER BY id"
                ).format(self.parked)
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []

    def outbox_rows(self) -> int:
        row = self.conn.execute(SQL("SELECT count(*) FROM {}").format(self.outbox)).fetchone()
        return int(row[0]) if row else -1

    def close(self) -> None:
        self.conn.close()
        self.app.close()


def test_rows_kafka_will_never_take_are_parked_and_the_rest_arrive_once_each(
    settings: Settings, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    results_topic = topics.site_results("site-a")  # the site of every order placed here
    make_site_topics(settings, ["site-a"])
    campaign_id = f"poison-{unique}"
    store = Store(settings)
    store.app.open_campaign(campaign(campaign_id, max_per_buyer=None), datetime.now(UTC))
    for n in range(3):
        store.place(campaign_id, n)
    store.insert_event(get_topic(Campaign.Opened), b"{not json")  # parked: unreadable
    store.place(campaign_id, 3, placed_at=MARKER)  # version 5, published with placed_at null
    store.rewrite_placed_at(campaign_id, 5, YEAR_1_EAST)
    huge = store.opened_state(campaign_id) | {"campaign_id": f"huge-{unique}"}
    huge["title"] = "t" * (EVENT_MAX_BYTES + MiB)  # parked: larger than campaign-events takes
    store.insert_event(get_topic(Campaign.Opened), json.dumps(huge).encode())
    for n in range(4, 7):
        store.place(campaign_id, n)
    for n in range(RESULTS_BEFORE):
        store.insert_outbox(results_topic, b"campaign", f"before-{n}".encode())
    too_large = b"x" * (DEAD_LETTER_MAX_BYTES + 64 * 1024)  # parked: larger than the DLQ takes
    store.insert_outbox(topics.orders_dlq, b"raw", too_large)
    for n in range(RESULTS_AFTER):
        store.insert_outbox(results_topic, b"campaign", f"after-{n}".encode())
    versions = list(range(1, 9))  # opened, and 7 commitments placed
    results = RESULTS_BEFORE + RESULTS_AFTER + 7

    with running(run_relay, settings):
        wait_for(lambda: len(store.parked_rows()) == 3, timeout=60, what="three parked rows")
        wait_for(lambda: store.outbox_rows() == 0, timeout=30, what="an empty outbox")
        read_until(settings, results_topic, lambda rs: len(rs) >= results, timeout=30)
        # Anything sent twice would come within this while, the relay still running.
        events = read_until(settings, topics.campaign_events, lambda rs: False, timeout=3)
        answers = read_until(settings, results_topic, lambda rs: False, timeout=1)
        dead = read_until(settings, topics.orders_dlq, lambda rs: False, timeout=1)
    parked = store.parked_rows()
    store.close()

    messages = [json.loads(record.value) for record in events]
    assert [(m["campaign_id"], m["version"]) for m in messages] == [
        (campaign_id, v) for v in versions
    ]
    assert messages[4]["placed_at"] is None
    assert messages[4]["order_id"] == "o-3"
    inserted = [f"before-{n}" for n in range(RESULTS_BEFORE)]
    inserted += [f"after-{n}" for n in range(RESULTS_AFTER)]
    assert Counter(r.value for r in answers if not r.value.startswith(b"{")) == Counter(
        text.encode() for text in inserted
    )
    accepted = [json.loads(r.value) for r in answers if r.value.startswith(b"{")]
    assert sorted(m["order_id"] for m in accepted) == [f"o-{n}" for n in range(7)]
    assert dead == []
    unreadable, too_large_event = sorted(row for row in parked if row[0] is not None)
    assert "MapperDeserialisationError" in unreadable[4]
    assert "MessageSizeTooLargeError" in too_large_event[4]
    (dead_letter,) = (row for row in parked if row[1] is not None)
    assert dead_letter[2:4] == (topics.orders_dlq, len(too_large))
    assert "MessageSizeTooLargeError" in dead_letter[4]


def test_a_registered_sites_missing_topic_is_made_and_an_unregistered_sites_is_not(
    settings: Settings, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    results = topics.site_results("site-a")
    late, ghost = f"late-{unique}", f"ghost-{unique}"
    # `late` is registered (its orders topic exists) but its results topic was deleted by
    # hand; `ghost` was never registered, so it has sent no order through Kafka.
    kafka_clients.ensure_topics(
        settings, [results, topics.site_orders(late), topics.relay_progress]
    )
    store = Store(settings)
    create_parking(store.app)
    chosen = {5: topics.site_results(late), 7: topics.site_results(ghost)}
    for n in range(10):
        store.insert_outbox(chosen.get(n, results), b"campaign", f"result-{n}".encode())
    limits = TopicLimits(settings)
    publisher = OutboxPublisher(
        settings.database_schema,
        OUTBOX_TABLE,
        publisher_producer(settings, "outbox"),
        limits,
        ProgressLog(settings, "outbox"),
    )

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        published = publisher(conn)
        published_again = publisher(conn)
    publisher.close()
    limits.close()
    after = read_until(settings, results, lambda rs: len(rs) >= 8, timeout=10)
    made = read_until(settings, topics.site_results(late), lambda rs: bool(rs), timeout=10)
    admin = kafka_clients.admin(settings)
    try:
        names = set(admin.list_topics())
        (described,) = admin.describe_topics([topics.site_results(late)])
    finally:
        admin.close()
    parked, left = store.parked_rows(), store.outbox_rows()
    store.close()

    assert (published, published_again, parked, left) == (10, 0, [], 0)
    sent = Counter(record.value for record in after)
    assert sent == Counter(f"result-{n}".encode() for n in range(10) if n not in chosen)
    assert [record.value for record in made] == [b"result-5"]
    assert len(described["partitions"]) == topics.partitions(results)  # groupbuy's settings
    assert topics.site_results(ghost) not in names  # nothing made, nothing sent
