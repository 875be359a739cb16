"""Prometheus metrics of groupbuy's services, and the endpoint that serves them.

Counted per batch, not per record: a service adds a batch's tallies once it has saved the
batch, so a batch applied again after a failure is counted once. With
`GROUPBUY_METRICS_PORT` set, `serve` answers `/metrics`, `/healthz` (the process is up)
and `/readyz` (the service's own readiness check) on that port.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from kafka import TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from psycopg.sql import Composed

from consumers.ingest import IngestBatch
from infra.settings import Settings, ready_max_lag

log = logging.getLogger(__name__)

# Outcome of an order or a cancellation: accepted, rejected, or duplicate (a repeat, answered
# as the first time and counted apart); the reason of a rejection, else "".
ORDERS = Counter(
    "groupbuy_orders",
    "Orders and cancellations ingested, by kind, outcome and reason",
    ["kind", "outcome", "reason"],
)
DEAD_LETTERS = Counter(
    "groupbuy_dead_letters",
    "Records set aside on the dead-letter topic, by service and cause",
    ["service", "cause"],
)
BATCH_RECORDS = Histogram(
    "groupbuy_batch_records",
    "Records in a batch a service applied and saved",
    ["service"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
BATCH_SECONDS = Histogram(
    "groupbuy_batch_seconds",
    "Seconds a service took to apply and save a batch",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

LIVE_STREAMS = Gauge(
    "groupbuy_live_streams",
    "Server-Sent Event streams open in groupbuy serve: one campaign's, or every campaign's",
    ["stream"],
)

SETTLE_TRANSACTIONS = Counter(
    "groupbuy_settle_transactions",
    "Kafka transactions of settle, by result (committed, aborted)",
    ["result"],
)
CAMPAIGNS_SETTLED = Counter(
    "groupbuy_campaigns_settled",
    "Closed campaigns settle published, by outcome: succeeded (a purchase order), failed",
    ["outcome"],
)

CONSUMER_LAG = Gauge(
    "groupbuy_consumer_lag",
    "Records on a partition after the service's position in it (high watermark minus it)",
    ["service", "topic", "partition"],
)

PURCHASE_ORDERS = Counter(
    "groupbuy_purchase_orders",
    "Purchase orders settle sent to suppliers (one per campaign that succeeded)",
)
RELAY_LAG = Gauge(
    "groupbuy_relay_lag_events",
    "Events the event store holds that the relay has not yet published to Kafka",
)
OUTBOX_ROWS = Gauge(
    "groupbuy_outbox_rows",
    "Rows in the outbox (order results, dead letters) waiting for the relay",
)
CAMPAIGNS_OVERDUE = Gauge(
    "groupbuy_campaigns_overdue",
    "Campaigns past their deadline (by the broker's time) and not yet closed",
)
CAMPAIGN_HELD = Gauge(
    "groupbuy_campaign_held_seconds",
    "Seconds since the deadline of a campaign that an orders partition holds back: ingestion "
    "has not yet applied every order appended there before the deadline",
    ["campaign", "topic", "partition"],
)
INGEST_WORKERS = Gauge(
    "groupbuy_ingest_workers",
    "Worker processes of ingest --workers alive (a worker that dies stops the service, "
    "whose supervisor starts it again: see process_start_time_seconds)",
)

Readiness = Callable[[], str | None]  # None when ready, else why not


def batch_saved(service: str) -> Callable[[int, float], None]:
    """Observes the size and seconds of each batch `service` saved (`TrackedLoop`)."""
    records, seconds = BATCH_RECORDS.labels(service), BATCH_SECONDS.labels(service)

    def saved(count: int, took: float) -> None:
        records.observe(count)
        seconds.observe(took)

    return saved


class ConsumerHealth:
    """A consumer service's lag: its gauges, and what `/readyz` says of it (partitions
    assigned, every partition's lag within `max_lag`)."""

    def __init__(self, service: str, max_lag: int) -> None:
        self.service, self.max_lag = service, max_lag
        self.shown: set[tuple[str, str]] = set()
        self.lag: dict[TopicPartition, int] | None = None  # None until first reported

    def report(self, lag: dict[TopicPartition, int]) -> None:
        """Set the gauges to `lag`, and drop those of partitions no longer reported."""
        now = {(partition.topic, str(partition.partition)) for partition in lag}
        for topic, number in self.shown - now:
            CONSUMER_LAG.remove(self.service, topic, number)
        for partition, count in lag.items():
            CONSUMER_LAG.labels(self.service, partition.topic, str(partition.partition)).set(count)
        self.shown = now
        self.lag = dict(lag)

    def why_not(self) -> str | None:
        """Not ready before its first assignment, nor while a partition is too far behind;
        ready with no partitions (no site registered yet, or more members than partitions:
        nothing to do)."""
        if self.lag is None:
            return f"{self.service}: no partitions assigned yet"
        if not self.lag:
            return None
        partition, worst = max(self.lag.items(), key=lambda item: item[1])
        if worst > self.max_lag:
            return (
                f"{self.service}: {worst} records behind on {partition.topic}:"
                f"{partition.partition} (more than {self.max_lag})"
            )
        return None


CONSUMERS: list[ConsumerHealth] = []  # of this process, each asked by /readyz


def lag_reporter(service: str) -> Callable[[dict[TopicPartition, int]], None]:
    """Sets `service`'s lag gauges to the lags reported (TrackedLoop's `lagging` hook), and
    makes `/readyz` wait for them to be assigned and under GROUPBUY_READY_MAX_LAG."""
    health = ConsumerHealth(service, ready_max_lag())
    CONSUMERS.append(health)
    return health.report


def relay_backlog(conn: psycopg.Connection[Any], events: Composed, outbox: Composed) -> None:
    """Set the relay's gauges: events after its position, rows in the outbox. `events` and
    `outbox` are the queries that count them (infra/services/relay.py)."""
    for gauge, query in ((RELAY_LAG, events), (OUTBOX_ROWS, outbox)):
        (count,) = conn.execute(query).fetchone() or (0,)
        gauge.set(count)


def campaigns_held(held: dict[tuple[str, str, int], float]) -> None:
    """Set the clock's gauge of each (campaign, topic, partition) where the partition holds
    a due campaign back: the seconds since its deadline. Those no longer held go."""
    CAMPAIGN_HELD.clear()
    for (campaign_id, topic, partition), seconds in held.items():
        CAMPAIGN_HELD.labels(campaign_id, topic, str(partition)).set(seconds)


class IngestMetrics:
    """Ingest's counts, told of each batch once saved (consumers.ingest.IngestObserver)."""

    def saved(self, batch: IngestBatch) -> None:
        self.count(batch.tally, batch.dead_letters)

    @staticmethod
    def parked() -> None:
        DEAD_LETTERS.labels("ingest", "unsaved").inc()

    @staticmethod
    def count(tally: dict[tuple[str, str, str], int], dead_letters: dict[str, int]) -> None:
        """Add a batch's tallies (also those a worker of ingest --workers sends)."""
        for labels, count in tally.items():
            ORDERS.labels(*labels).inc(count)
        for cause, count in dead_letters.items():
            DEAD_LETTERS.labels("ingest", cause).inc(count)


def dependencies(settings: Settings, stop: threading.Event) -> Readiness:
    """Ready while not stopping, with PostgreSQL answering and a broker accepting a
    connection (each asked with a two-second limit), and each consumer of the process
    assigned partitions and within GROUPBUY_READY_MAX_LAG of their ends."""

    def why_not() -> str | None:
        if stop.is_set():
            return "stopping"
        for consumer in CONSUMERS:
            if (why := consumer.why_not()) is not None:
                return why
        try:
            with psycopg.connect(settings.postgres_conninfo, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as error:  # never the URL: it may hold a password
            return f"PostgreSQL: {error.__class__.__name__}"
        host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        except (OSError, ValueError) as error:
            return f"Kafka: {error.__class__.__name__} at {host}:{port}"
        return None

    return why_not


def serve(port: int, ready: Readiness, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Answer `/metrics`, `/healthz` and `/readyz` on `port` from a daemon thread; returns
    the server (its `server_address` holds the port when 0 was asked for)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._answer(200, b"ok\n")
            elif self.path == "/readyz":
                why = ready()
                self._answer(503 if why else 200, f"{why or 'ready'}\n".encode())
            else:
                self._answer(404, b"not found\n")

        def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every few seconds is not news

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on port %d: /metrics, /healthz, /readyz", server.server_address[1])
    return server
