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

import psycopg
from kafka import TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from consumers.ingest import IngestBatch
from infra.settings import Settings

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

Readiness = Callable[[], str | None]  # None when ready, else why not


def batch_saved(service: str) -> Callable[[int, float], None]:
    """Observes the size and seconds of each batch `service` saved (`TrackedLoop`)."""
    records, seconds = BATCH_RECORDS.labels(service), BATCH_SECONDS.labels(service)

    def saved(count: int, took: float) -> None:
        records.observe(count)
        seconds.observe(took)

    return saved


def lag_reporter(service: str) -> Callable[[dict[TopicPartition, int]], None]:
    """Sets `service`'s lag gauges to the lags reported, and drops those of partitions it
    no longer has."""
    shown: set[tuple[str, str]] = set()

    def report(lag: dict[TopicPartition, int]) -> None:
        now = {(partition.topic, str(partition.partition)) for partition in lag}
        for topic, number in shown - now:
            CONSUMER_LAG.remove(service, topic, number)
        for partition, count in lag.items():
            CONSUMER_LAG.labels(service, partition.topic, str(partition.partition)).set(count)
        shown.clear()
        shown.update(now)

    return report


class IngestMetrics:
    """Ingest's counts, told of each batch once saved (consumers.ingest.IngestObserver)."""

    def saved(self, batch: IngestBatch, records: int, seconds: float) -> None:
        BATCH_RECORDS.labels("ingest").observe(records)
        BATCH_SECONDS.labels("ingest").observe(seconds)
        for labels, count in batch.tally.items():
            ORDERS.labels(*labels).inc(count)
        for cause, count in batch.dead_letters.items():
            DEAD_LETTERS.labels("ingest", cause).inc(count)

    def parked(self) -> None:
        DEAD_LETTERS.labels("ingest", "unsaved").inc()


def dependencies(settings: Settings, stop: threading.Event) -> Readiness:
    """Ready while not stopping, with PostgreSQL answering and a broker accepting a
    connection, each asked with a two-second limit."""

    def why_not() -> str | None:
        if stop.is_set():
            return "stopping"
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
