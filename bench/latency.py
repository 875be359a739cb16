"""Order-to-read-model latency at a steady publishing rate: p50, p99, max; with `--hops`,
each hop's share too (ingest, relay, projector)."""

# Usage:
#   python -m bench.latency                 # 500 orders/s for 20 s
#   python -m bench.latency --rate 200 --seconds 5
#   python -m bench.latency --campaigns 1   # every order to one campaign (a hot one)
#   python -m bench.latency --hops          # also time each hop: the watchers of the event
#                                           # store and the topic take CPU of their own

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from kafka import KafkaProducer
from kafka.structs import TopicPartition
from psycopg.sql import SQL, Identifier

from bench.common import isolated_settings, report
from bench.ingest import GROUPBUY, definition, make_site_topics, order
from infra.adapters import kafka_clients
from infra.adapters.app import open_app, recorder_of
from infra.adapters.topics import Topics
from infra.settings import Settings
from projections.read_models import ReadModelTables

HOPS = ("publish", "ingest", "relay", "project")  # each ends where the next begins


@dataclass
class Probe:
    """When each order was handed to the producer, then first seen at the end of each hop:
    acknowledged by the broker (publish), stored in the event store (ingest), readable on
    the campaign events topic (the relay's transaction committed), and in the read model
    (the projector's batch committed)."""

    sent: dict[str, float] = field(default_factory=dict)
    campaign_of: dict[str, str] = field(default_factory=dict)
    reached: dict[str, dict[str, float]] = field(default_factory=lambda: {h: {} for h in HOPS})
    unseen: set[str] = field(default_factory=set)  # sent, not yet in the read model

    @property
    def seen(self) -> dict[str, float]:
        return self.reached[HOPS[-1]]

    def mark(self, hop: str, order_ids: Iterable[str]) -> None:
        now, reached = time.perf_counter(), self.reached[hop]
        for order_id in order_ids:
            reached.setdefault(order_id, now)
            if hop == HOPS[-1]:
                self.unseen.discard(order_id)

    def latencies_ms(self) -> list[float]:
        return sorted((self.seen[o] - self.sent[o]) * 1000 for o in self.seen)

    def hop_ms(self, hop: str) -> list[float]:
        """Each order's time in `hop`: from the end of the hop before to the end of this one."""
        before = self.reached[HOPS[HOPS.index(hop) - 1]] if hop != HOPS[0] else self.sent
        after = self.reached[hop]
        return sorted((after[o] - before[o]) * 1000 for o in after if o in before)


def publish_steadily(
    settings: Settings, rate: int, seconds: float, campaigns: int, probe: Probe, hops: bool
) -> None:
    """Each order to its site's orders topic (bench.ingest's three sites, in turn); with
    `hops`, noting when the broker acknowledged it (the load generator's and the broker's
    share, before ingest can see it)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    topics = Topics(settings.topic_prefix)
    rng = random.Random(5)
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        time.sleep(max(0.0, start + n / rate - time.perf_counter()))
        campaign_id = f"bench-{n % campaigns}"
        message = order(campaign_id, n, rng)
        probe.campaign_of[message["order_id"]] = campaign_id
        probe.sent[message["order_id"]] = time.perf_counter()
        probe.unseen.add(message["order_id"])
        topic = topics.site_orders(message["site_id"])
        sent = producer.send(topic, key=campaign_id.encode(), value=json.dumps(message).encode())
        if hops:
            sent.add_callback(
                lambda _, order_id=message["order_id"]: probe.mark("publish", [order_id])
            )
    producer.flush()
    producer.close()


def watch_event_store(settings: Settings, probe: Probe, until: threading.Event) -> None:
    """Wake on the event store's notification, as the relay does, and read what is new."""
    app = open_app(settings)
    after = 0
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as listener:
            listener.execute(SQL("LISTEN {}").format(Identifier(recorder_of(app).channel_name)))
            while not until.is_set():
                for notification in app.recorder.select_notifications(
                    after, 1000, inclusive_of_start=False
                ):
                    after = notification.id
                    event = app.mapper.to_domain_event(notification)
                    if hasattr(event, "order_id"):
                        probe.mark("ingest", [event.order_id])
                await_notification(listener)
    finally:
        app.close()


def watch_campaign_events(settings: Settings, probe: Probe, until: threading.Event) -> None:
    """Read the campaign events topic as the projector does: committed transactions only."""
    topic = Topics(settings.topic_prefix).campaign_events
    reader = kafka_clients.reader(settings, fetch_max_wait_ms=20)
    try:
        while not (numbers := reader.partitions_for_topic(topic)):
            time.sleep(0.1)
        partitions = [TopicPartition(topic, n) for n in numbers]
        reader.assign(partitions)
        reader.seek_to_beginning(*partitions)
        while not until.is_set():
            for records in reader.poll(timeout_ms=50).values():
                values = (json.loads(record.value) for record in records)
                probe.mark("relay", [v["order_id"] for v in values if "order_id" in v])
    finally:
        reader.close()


def watch_read_model(settings: Settings, probe: Probe, until: threading.Event) -> None:
    """Wake on the projector's notification, as `groupbuy serve` does, and look the pending
    orders up by primary key, so watching costs next to nothing."""
    tables = ReadModelTables(settings.database_schema)
    query = SQL(
        "SELECT order_id FROM {} WHERE (campaign_id, order_id) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[]))"
    ).format(tables.commitments)
    with (
        psycopg.connect(settings.database_url, autocommit=True) as conn,
        psycopg.connect(settings.database_url, autocommit=True) as listener,
    ):
        listener.execute(SQL("LISTEN {}").format(Identifier(tables.channel)))
        while not until.is_set():
            pending = list(probe.unseen)  # a few dozen: looking costs next to nothing
            if pending:
                campaigns = [probe.campaign_of[o] for o in pending]
                rows = conn.execute(query, (campaigns, pending)).fetchall()
                probe.mark("project", [order_id for (order_id,) in rows])
            await_notification(listener)


def measure(
    settings: Settings, rate: int, seconds: float, campaigns: int, hops: bool
) -> dict[str, float]:
    app = open_app(settings)
    for n in range(campaigns):
        app.open_campaign(definition(f"bench-{n}"), datetime.now(UTC))
    app.close()
    make_site_topics(settings)  # before ingest starts, as `groupbuy site add` would
    # Each service in its own process, as deployed: they must not share one interpreter.
    services = [
        subprocess.Popen([GROUPBUY, name], env=os.environ | settings.as_env())
        for name in ("ingest", "relay", "project")
    ]
    time.sleep(5)  # let the consumer groups settle before the clock starts
    probe, expected, until = Probe(), int(rate * seconds), threading.Event()
    watches = [watch_event_store, watch_campaign_events] if hops else []
    watchers = [
        threading.Thread(target=watch, args=(settings, probe, until))
        for watch in [*watches, watch_read_model]
    ]
    for watcher in watchers:
        watcher.start()
    publish_steadily(settings, rate, seconds, campaigns, probe, hops)
    deadline = time.monotonic() + 120
    while len(probe.seen) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    until.set()
    for watcher in watchers:
        watcher.join()
    for process in services:
        process.send_signal(signal.SIGTERM)
    for process in services:
        process.wait(timeout=60)
    latencies = probe.latencies_ms()
    figures: dict[str, float] = {
        "orders": expected,
        "rate_per_s": rate,
        "campaigns": campaigns,
        "seen": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
    }
    # Each hop's own share; the p99s of the parts do not add up to the whole's.
    for hop in HOPS if hops else ():
        hop_ms = probe.hop_ms(hop)
        figures[f"{hop}_p50_ms"] = statistics.median(hop_ms)
        figures[f"{hop}_p99_ms"] = percentile(hop_ms, 0.99)
    return figures


def await_notification(listener: psycopg.Connection[Any]) -> None:
    """Wait up to 50 ms for a notification, then take those already come with it: a
    projector's commit names each campaign it changed, and one look covers them all."""
    if any(listener.notifies(timeout=0.05, stop_after=1)):
        for _ in listener.notifies(timeout=0):
            pass


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[max(0, int(len(ordered) * fraction) - 1)]


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--rate", type=int, default=500)
    arguments.add_argument("--seconds", type=float, default=20)
    arguments.add_argument("--campaigns", type=int, default=20, help="orders spread over")
    arguments.add_argument("--hops", action="store_true", help="time each hop as well")
    options = arguments.parse_args()
    with isolated_settings("latency") as settings:
        report(measure(settings, options.rate, options.seconds, options.campaigns, options.hops))


if __name__ == "__main__":
    main()
