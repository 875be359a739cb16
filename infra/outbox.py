"""Publishes outbox rows to Kafka after their transaction committed: at least once, in order."""

from __future__ import annotations

import logging
import threading
import zlib
from typing import Any

import psycopg
from kafka import KafkaProducer
from kafka.errors import KafkaError
from psycopg.sql import SQL, Identifier

from infra.store import OUTBOX_CHANNEL

log = logging.getLogger(__name__)
BATCH = 2000


class OutboxPublisher:
    def __init__(self, database_url: str, schema: str, table: str, producer: KafkaProducer) -> None:
        self.database_url = database_url
        self.producer = producer
        qualified = Identifier(schema, table)
        self.select = SQL(
            "SELECT id, topic, key, value, headers FROM {} ORDER BY id LIMIT %s"
        ).format(qualified)
        self.delete = SQL("DELETE FROM {} WHERE id = ANY(%s)").format(qualified)
        # One publisher per outbox at a time keeps the rows in order; others wait their turn.
        self.lock_key = zlib.crc32(f"{schema}.{table}".encode())

    def publish_pending(self, conn: psycopg.Connection[Any]) -> int:
        """Send one batch of rows, wait for Kafka's acks, then delete them; the count sent."""
        rows = conn.execute(self.select, (BATCH,)).fetchall()
        if not rows:
            return 0
        futures = [
            self.producer.send(
                topic,
                key=key,
                value=value,
                headers=[(name, bytes.fromhex(hexed)) for name, hexed in headers],
            )
            for _, topic, key, value, headers in rows
        ]
        self.producer.flush()
        for future in futures:
            future.get(timeout=0)  # raises if Kafka refused one: the rows stay for a retry
        conn.execute(self.delete, ([row[0] for row in rows],))
        return len(rows)

    def run(self, stop: threading.Event, idle_wait: float = 0.5) -> None:
        """Publish until `stop` is set, woken by NOTIFY from the transactions that add rows."""
        while not stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True) as conn:
                    if self._take_turn(conn):
                        conn.execute(SQL("LISTEN {}").format(Identifier(OUTBOX_CHANNEL)))
                        self._drain_until(stop, conn, idle_wait)
            except (psycopg.Error, KafkaError) as error:
                # The rows stay in the outbox; the next attempt sends them.
                log.warning("outbox publisher: %s; retrying", error)
            stop.wait(idle_wait)

    def _take_turn(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,)).fetchone()
        return bool(row and row[0])

    def _drain_until(
        self, stop: threading.Event, conn: psycopg.Connection[Any], idle_wait: float
    ) -> None:
        while not stop.is_set():
            while self.publish_pending(conn) == BATCH:
                pass
            for _ in conn.notifies(timeout=idle_wait, stop_after=1):
                pass
