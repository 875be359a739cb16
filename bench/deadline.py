"""Deadline to purchase order: 200 campaigns sharing one deadline; p50, p99, max."""

# Usage:
#   python -m bench.deadline                  # 200 campaigns, 10 suppliers
#   python -m bench.deadline --campaigns 50

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.common import isolated_settings, report, spec_campaign
from bench.ingest import GROUPBUY, SITES, make_site_topics
from domain.campaign import Campaign
from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.settings import Settings

SUPPLIERS = [f"supplier-{n}" for n in range(10)]
LEAD = 25.0  # seconds from opening to the deadline: services start, orders are ingested


def make_topics(settings: Settings) -> list[str]:
    """The sites' and the suppliers' topics, as `groupbuy site add` and `supplier add` make
    them, before the services start; the supplier topics."""
    make_site_topics(settings)
    topics = Topics(settings.topic_prefix)
    supplier_topics = [topics.settlements(s) for s in SUPPLIERS]
    kafka_clients.ensure_topics(settings, supplier_topics)
    return supplier_topics


def prepare(settings: Settings, campaigns: int) -> datetime:
    """Open the campaigns, publish their orders, each to its site's orders topic (three
    sites', in turn); the shared deadline."""
    topics = Topics(settings.topic_prefix)
    deadline = datetime.now(UTC) + timedelta(seconds=LEAD)
    app = open_app(settings)
    for n in range(campaigns):
        definition = spec_campaign(
            f"bench-{n}",
            supplier_id=SUPPLIERS[n % len(SUPPLIERS)],
            minimum_quantity=1,
            deadline=deadline.isoformat(),
        )
        app.open_campaign(definition, datetime.now(UTC))
    app.close()
    orders = [
        {
            "type": "order.placed",
            "order_id": f"{SITES[k % len(SITES)]}:{n}:{k}",
            "site_id": SITES[k % len(SITES)],
            "campaign_id": f"bench-{n}",
            "buyer_id": f"b-{k}",
            "quantity": 1 + k % 3,
            "placed_at": "2026-11-27T10:00:00Z",
        }
        for n in range(campaigns)
        for k in range(5)
    ]
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    for message in orders:
        key = message["campaign_id"].encode()
        topic = topics.site_orders(message["site_id"])
        producer.send(topic, key=key, value=json.dumps(message).encode())
    producer.close()
    return deadline


def purchase_order_arrivals(
    settings: Settings, supplier_topics: list[str], expected: int, deadline: datetime
) -> list[float]:
    """Seconds from the deadline to each purchase order's arrival, read committed."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    partitions = [
        TopicPartition(topic, p)
        for topic in supplier_topics
        for p in consumer.partitions_for_topic(topic) or ()
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    delays: dict[str, float] = {}
    give_up = time.monotonic() + LEAD + 120
    while len(delays) < expected and time.monotonic() < give_up:
        for records in consumer.poll(timeout_ms=100).values():
            arrived = time.time()
            for record in records:
                order = json.loads(record.value)
                delays.setdefault(order["purchase_order_id"], arrived - deadline.timestamp())
    consumer.close()
    return sorted(delays.values())


def measure(settings: Settings, campaigns: int) -> dict[str, float]:
    supplier_topics = make_topics(settings)
    services = [
        subprocess.Popen([GROUPBUY, name], env=os.environ | settings.as_env())
        for name in ("ingest", "relay", "clock", "settle")
    ]
    try:
        deadline = prepare(settings, campaigns)
        delays = purchase_order_arrivals(settings, supplier_topics, campaigns, deadline)
        closes = close_delays(settings, campaigns, deadline)
    finally:
        for process in services:
            process.send_signal(signal.SIGTERM)
        for process in services:
            process.wait(timeout=60)
    return {
        "campaigns": campaigns,
        "purchase_orders": len(delays),
        "p50_s": statistics.median(delays),
        "p99_s": delays[max(0, int(len(delays) * 0.99) - 1)],
        "max_s": delays[-1],
        "close_p50_s": statistics.median(closes),
        "close_max_s": closes[-1],
    }


def close_delays(settings: Settings, campaigns: int, deadline: datetime) -> list[float]:
    """Seconds from the deadline to when the clock recorded each campaign's close."""
    app = open_app(settings)
    delays = []
    for n in range(campaigns):
        events = app.events.get(Campaign.create_id(f"bench-{n}"))
        (closed,) = [e for e in events if isinstance(e, Campaign.Closed)]
        delays.append((closed.timestamp - deadline).total_seconds())
    app.close()
    return sorted(delays)


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--campaigns", type=int, default=200)
    options = arguments.parse_args()
    with isolated_settings("deadline") as settings:
        report(measure(settings, options.campaigns))


if __name__ == "__main__":
    main()
