"""Poison records among orders reach the DLQ with their headers byte for byte; ingest goes on."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

import consumers.loop
from consumers.batch import RawHeaderKey
from consumers.loop import read_raw_header_keys
from domain.application import GroupBuying
from infra.adapters.app import OUTBOX_TABLE, open_app
from infra.adapters.topics import Topics
from infra.services.ingest import run_ingest
from infra.services.relay import run_relay
from infra.settings import Settings
from tests.support.builders import campaign, placed
from tests.support.kafka_io import make_site_topics, produce_raw, read_json, site_client
from tests.support.pipeline import running

Headers = list[tuple[str, bytes | None]]
SITE = "site-a"  # every record here is one site's, in one partition of its topic
NOT_UTF8 = RawHeaderKey(b"\xffk\xfe".decode("utf-8", "surrogateescape"))


@pytest.fixture
def app(settings: Settings) -> Iterator[GroupBuying]:
    application = open_app(settings)
    yield application
    application.close()


class Publisher:
    """Sends to partition 0 of a site's orders topic, in producer batches, and knows the offsets."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.producer = KafkaProducer(**site_client(settings), acks="all", linger_ms=100)
        self.admin = KafkaAdminClient(**site_client(settings))
        self.sent: dict[bytes, Any] = {}  # each value, and the future or offset of its send

    def send(self, value: bytes, headers: Headers | None = None, key: bytes = b"poison") -> None:
        headers = headers or []
        if any(header_value is None for _, header_value in headers):
            self.flush()
            self.sent[value] = self._produce(key, value, headers)
            return
        self.sent[value] = self.producer.send(
            self.topic, value=value, key=key, headers=headers, partition=0
        )

    def _produce(self, key: bytes, value: bytes, headers: Headers) -> int:
        """A record with a null header value, which Kafka has (a Java producer sends one)
        but kafka-python's send() refuses: built with kafka-python's record builder, and
        sent as a produce request of its own."""
        offset, _ = produce_raw(self.admin, self.topic, 0, key, value, headers)
        return offset

    def flush(self) -> None:
        self.producer.flush()

    def offsets(self) -> dict[bytes, int]:
        """Where each value sent went."""
        self.flush()
        return {
            value: sent if isinstance(sent, int) else sent.get(timeout=10).offset
            for value, sent in self.sent.items()
        }

    def close(self) -> None:
        self.producer.close()
        self.admin.close()


def read_dead_letters(settings: Settings, topic: str, count: int) -> list[ConsumerRecord]:
    """At least `count` records of the DLQ, header names that are not UTF-8 included."""
    consumer = KafkaConsumer(**site_client(settings), group_id=None, auto_offset_reset="earliest")
    read_raw_header_keys(consumer)  # a plain consumer fails on such a name
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + 60
    try:
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def with_surrogate(order: dict[str, Any], field: str) -> bytes:
    """The order with a lone surrogate in `field`, as a JSON escape (valid JSON, and UTF-8)."""
    return json.dumps(order | {field: "SURROGATE"}).replace("SURROGATE", "\\ud800").encode()


def as_sent(headers: Headers) -> list[tuple[bytes, bytes | None]]:
    return [(name.encode("utf-8"), value) for name, value in headers]


def test_poison_records_reach_the_dlq_byte_for_byte_and_every_order_gets_one_result(
    settings: Settings, app: GroupBuying, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    make_site_topics(settings, [SITE])
    campaign_id = f"poison-{unique}"
    app.open_campaign(campaign(campaign_id), datetime.now(UTC))
    orders = [placed(campaign_id, n, site_id=SITE) for n in range(8)]
    poison: dict[bytes, Headers] = {
        with_surrogate(placed(campaign_id, 100, site_id=SITE), "site_id"): [("trace", b"s-1")],
        with_surrogate(placed(campaign_id, 101, site_id=SITE), "order_id"): [],
        b'{"type": "order.placed", "quantity": ': [("null", None), ("trace", b"n-1")],
        b"not json": [("a\x00b", b"\x00nul\x00")],
        b"[1, 2": [(NOT_UTF8, b"raw"), ("trace", b"r-1")],
    }
    publisher = Publisher(settings, topics.site_orders(SITE))
    # One producer batch, poison records between valid orders (these too with a raw name).
    poisoned = list(poison.items())
    for n, order in enumerate(orders):
        publisher.send(json.dumps(order).encode(), [(NOT_UTF8, b"valid")])
        if n < len(poisoned):
            publisher.send(*poisoned[n])
    offsets = publisher.offsets()
    last = placed(campaign_id, 50, site_id=SITE)

    with running(run_ingest, settings), running(run_relay, settings):
        dead = read_dead_letters(settings, topics.orders_dlq, len(poison))
        publisher.send(json.dumps(last).encode())  # after the poison: ingest still runs
        publisher.flush()
        results = read_json(settings, topics.site_results(SITE), len(orders) + 1, timeout=30)
    publisher.close()

    assert Counter(r["order_id"] for r in results) == Counter(
        o["order_id"] for o in [*orders, last]
    )
    assert {r["type"] for r in results} == {"order.accepted"}
    assert sorted(record.value for record in dead) == sorted(poison)
    for record in dead:
        headers = [(name.encode("utf-8"), value) for name, value in record.headers]
        sent = as_sent(poison[record.value])
        assert headers[: len(sent)] == [(n, b"" if v is None else v) for n, v in sent]
        about = dict(headers[len(sent) :])
        assert set(about) == {b"error", b"source.topic", b"source.partition", b"source.offset"}
        assert about[b"source.offset"] == str(offsets[record.value]).encode()
        assert record.key == b"poison"


def test_a_record_kafka_python_cannot_read_is_set_aside_as_a_stub_and_ingest_goes_on(
    settings: Settings, app: GroupBuying, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without its header names read raw, kafka-python's poll() raises for such a record.
    monkeypatch.setattr(consumers.loop, "read_raw_header_keys", lambda consumer: False)
    topics = Topics(settings.topic_prefix)
    make_site_topics(settings, [SITE])
    campaign_id = f"stub-{unique}"
    app.open_campaign(campaign(campaign_id), datetime.now(UTC))
    before, after = placed(campaign_id, 1, site_id=SITE), placed(campaign_id, 2, site_id=SITE)
    unreadable = json.dumps(placed(campaign_id, 3, site_id=SITE)).encode()
    publisher = Publisher(settings, topics.site_orders(SITE))
    for value, headers in [
        (json.dumps(before).encode(), []),
        (unreadable, [(NOT_UTF8, b"x")]),
        (json.dumps(after).encode(), []),
    ]:
        publisher.send(value, headers)
        publisher.flush()  # each in a producer batch of its own
    offsets = publisher.offsets()
    publisher.close()

    with running(run_ingest, settings), running(run_relay, settings):
        results = read_json(settings, topics.site_results(SITE), 2, timeout=30)
        (stub,) = read_dead_letters(settings, topics.orders_dlq, 1)

    assert sorted(r["order_id"] for r in results) == sorted([before["order_id"], after["order_id"]])
    assert stub.value == b""  # its bytes are out of the client's reach: where it is, instead
    about = dict(stub.headers)
    assert about["source.offset"] == str(offsets[unreadable]).encode()
    assert about["error"].startswith(b"the Kafka client cannot read it: ")


def test_outbox_rows_written_before_header_names_were_hex_still_publish(
    settings: Settings, app: GroupBuying
) -> None:
    topics = Topics(settings.topic_prefix)
    make_site_topics(settings, [SITE])
    outbox = Identifier(settings.database_schema, OUTBOX_TABLE)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            SQL("INSERT INTO {} (topic, key, value, headers) VALUES (%s, %s, %s, %s)").format(
                outbox
            ),
            (topics.orders_dlq, b"k", b"{oops", Jsonb([["trace", "742d31"], ["error", ""]])),
        )

    with running(run_relay, settings):
        (dead,) = read_dead_letters(settings, topics.orders_dlq, 1)

    assert (dead.key, dead.value) == (b"k", b"{oops")
    assert dead.headers == [("trace", b"t-1"), ("error", b"")]
