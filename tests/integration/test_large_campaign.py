"""The largest messages the field limits allow get through: written, relayed, settled, read."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from kafka import TopicPartition

from domain.definition import MAX_QUANTITY
from domain.outcomes import Order
from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import EVENT_MAX_BYTES, Topics
from infra.services.relay import run_relay
from infra.services.settle import run_settle
from infra.settings import Settings
from tests.support.builders import campaign
from tests.support.kafka_io import read_until
from tests.support.pipeline import running

SITES = 10_000
BATCH = 1_000  # orders decided, then saved in one transaction
RECORD_OVERHEAD = 1024  # a record batch's header and the record's own fields, and more


def site(n: int) -> str:
    """A site id of the slug's full 64 characters."""
    return f"site-{n:05d}-".ljust(64, "x")


def test_messages_as_large_as_a_topic_takes_are_written_and_read_from_every_partition(
    settings: Settings,
) -> None:
    topics = Topics(settings.topic_prefix)
    topic = topics.campaign_events
    kafka_clients.ensure_topics(settings, [topic])
    size = topics.max_message_bytes(topic) - RECORD_OVERHEAD
    producer = kafka_clients.producer(settings, max_request_size=EVENT_MAX_BYTES)
    partitions = sorted(producer.partitions_for(topic))[:3]
    futures = [
        producer.send(topic, key=b"k", value=bytes([65 + p]) * size, partition=p)
        for p in partitions
    ]
    producer.flush()
    producer.close()
    assert [future.exception for future in futures] == [None] * len(partitions)
    # The consumer the services use, with its fetch sizes; several partitions at once.
    consumer = kafka_clients.consumer(settings, None)
    assigned = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    sizes: dict[int, list[int]] = {}
    deadline = time.monotonic() + 30
    try:
        while len(sizes) < len(partitions) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                sizes.setdefault(tp.partition, []).extend(len(r.value) for r in records)
    finally:
        consumer.close()
    assert sizes == {p: [size] for p in partitions}


def test_a_campaign_of_10000_sites_closes_into_one_purchase_order_with_every_line(
    settings: Settings, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    campaign_id, supplier = f"large-{unique}", f"acme-{unique}"
    definition = campaign(
        campaign_id,
        supplier_id=supplier,
        maximum_quantity=MAX_QUANTITY,
        minimum_quantity=1,
        max_per_buyer=None,
    )
    share = MAX_QUANTITY // SITES  # sold out by the last order; 6-digit lines, the longest
    app = open_app(settings)
    app.open_campaign(definition, datetime.now(UTC))
    for start in range(0, SITES, BATCH):
        placed = app.get_campaign(campaign_id)
        for n in range(start, start + BATCH):
            placed.place_order(Order(f"o-{n}", site(n), f"b-{n}", share), datetime.now(UTC))
        app.save(placed)
    app.close()

    with running(run_relay, settings), running(run_settle, settings):
        read_until(settings, topics.settlements(supplier), lambda rs: bool(rs), timeout=50)
        # Any second copy would come meanwhile; the relay and settle still run.
        orders = read_until(settings, topics.settlements(supplier), lambda rs: False, timeout=2)
    events = read_until(settings, topics.campaign_events, lambda rs: len(rs) >= SITES + 2)

    (closed,) = (r for r in events if dict(r.headers)["type"] == b"campaign.closed")
    assert len(json.loads(closed.value)["lines"]) == SITES
    (record,) = orders
    purchase_order = json.loads(record.value)
    assert purchase_order["type"] == "purchase_order.issued"
    assert purchase_order["quantity"] == MAX_QUANTITY
    lines = purchase_order["lines"]
    assert [line["site_id"] for line in lines] == [site(n) for n in range(SITES)]
    assert {line["quantity"] for line in lines} == {share}
    assert len(record.value) > 950_000  # as large as 10,000 sites within the limits make it
