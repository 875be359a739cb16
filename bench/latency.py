"""Order-to-read-model latency at a steady publishing rate: p50, p99, max."""

# Usage:
#   python -m bench.latency                 # 500 orders/s for 20 s
#   python -m bench.latency --rate 200 --seconds 5

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
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from kafka import KafkaProducer
from psycopg.sql import SQL

from bench.common import isolated_settings, report
from bench.ingest import GROUPBUY, definition, make_site_topics, order
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.settings import Settings
from projections.read_models import ReadModelTables

CAMPAIGNS = 20


@dataclass
class Probe:
    """When each order was handed to the producer, and when the read model first showed it."""

    sent: dict[str, float] = field(default_factory=dict)
    campaign_of: dict[str, str] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)

    def latencies_ms(self) -> list[float]:
        return sorted((self.seen[o] - self.sent[o]) * 1000 for o in self.seen)


def publish_steadily(settings: Settings, rate: int, seconds: float, probe: Probe) -> None:
    """Each order to its site's orders topic (bench.ingest's three sites, in turn)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    topics = Topics(settings.topic_prefix)
    rng = random.Random(5)
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        time.sleep(max(0.0, start + n / rate - time.perf_counter()))
        campaign_id = f"bench-{n % CAMPAIGNS}"
        message = order(campaign_id, n, rng)
        probe.campaign_of[message["order_id"]] = campaign_id
        probe.sent[message["order_id"]] = time.perf_counter()
        topic = topics.site_orders(message["site_id"])
        producer.send(topic, key=campaign_id.encode(), value=json.dumps(message).encode())
    producer.flush()
    producer.close()


def watch_read_model(settings: Settings, probe: Probe, expected: int) -> None:
    """Poll the commitments read model by primary key, so watching costs next to nothing."""
    query = SQL(
        "SELECT order_id FROM {} WHERE (campaign_id, order_id) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[]))"
    ).format(ReadModelTables(settings.database_schema).commitments)
    deadline = time.monotonic() + 120
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        while len(probe.seen) < expected and time.monotonic() < deadline:
            pending = [o for o in list(probe.sent) if o not in probe.seen]
            if pending:
                campaigns = [probe.campaign_of[o] for o in pending]
                now = time.perf_counter()
                for (order_id,) in conn.execute(query, (campaigns, pending)).fetchall():
                    probe.seen[order_id] = now
            time.sleep(0.01)


def measure(settings: Settings, rate: int, seconds: float) -> dict[str, float]:
    app = open_app(settings)
    for n in range(CAMPAIGNS):
        app.open_campaign(definition(f"bench-{n}"), datetime.now(UTC))
    app.close()
    make_site_topics(settings)  # before ingest starts, as `groupbuy site add` would
    # Each service in its own process, as deployed: they must not share one interpreter.
    services = [
        subprocess.Popen([GROUPBUY, name], env=os.environ | settings.as_env())
        for name in ("ingest", "relay", "project")
    ]
    time.sleep(5)  # let the consumer groups settle before the clock starts
    probe, expected = Probe(), int(rate * seconds)
    watcher = threading.Thread(target=watch_read_model, args=(settings, probe, expected))
    watcher.start()
    publish_steadily(settings, rate, seconds, probe)
    watcher.join()
    for process in services:
        process.send_signal(signal.SIGTERM)
    for process in services:
        process.wait(timeout=60)
    latencies = probe.latencies_ms()
    return {
        "orders": expected,
        "rate_per_s": rate,
        "seen": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "max_ms": latencies[-1],
    }


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--rate", type=int, default=500)
    arguments.add_argument("--seconds", type=float, default=20)
    options = arguments.parse_args()
    with isolated_settings("latency") as settings:
        report(measure(settings, options.rate, options.seconds))


if __name__ == "__main__":
    main()
