"""Runs a publisher whenever a PostgreSQL table may have grown, one process at a time."""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from kafka.errors import InvalidProducerEpochError, KafkaError, ProducerFencedError
from psycopg.sql import SQL, Identifier

from infra.settings import postgres_conninfo

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]
# Publishes one batch on the connection; returns how many it published (0: nothing new).
Publish = Callable[[Connection], int]
FIRST_BACKOFF, LAST_BACKOFF = 0.5, 30.0  # seconds before retrying, doubling between


class TableFollower:
    """Wakes on NOTIFY (or every `idle_wait` seconds) and publishes until nothing is left.

    Only the holder of a session advisory lock named after `name` publishes, so two relays
    never interleave; the other one takes over when the holder's connection ends. A lost
    connection or a retriable Kafka error is retried with backoff; anything else is raised
    out of `run`, to stop the relay rather than retry what would fail again.
    """

    def __init__(self, database_url: str, name: str, channel: str, publish: Publish) -> None:
        self.conninfo = postgres_conninfo(database_url)
        self.name = name
        self.channel = channel
        self.publish = publish
        self.lock_key = zlib.crc32(name.encode())
        self.failures = 0  # transient failures in a row

    def run(self, stop: threading.Event, idle_wait: float = 0.5) -> None:
        while not stop.is_set():
            try:
                with (
                    psycopg.connect(self.conninfo, autocommit=True) as conn,
                    psycopg.connect(self.conninfo, autocommit=True) as listener,
                ):
                    if self._take_turn(conn):
                        listener.execute(SQL("LISTEN {}").format(Identifier(self.channel)))
                        self._drain_until(stop, conn, listener, idle_wait)
            except Exception as error:
                if not is_transient(error):
                    raise
                # Nothing was marked published, so the next attempt sends it again.
                self.failures += 1
                backoff = min(FIRST_BACKOFF * 2 ** (self.failures - 1), LAST_BACKOFF)
                log.warning(
                    "%s: %s (attempt %d failed); retrying in %.1f s",
                    self.name,
                    " ".join(str(error).split()),
                    self.failures,
                    backoff,
                )
                stop.wait(backoff)
                continue
            stop.wait(idle_wait)

    def _take_turn(self, conn: Connection) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,)).fetchone()
        return bool(row and row[0])

    def _drain_until(
        self, stop: threading.Event, conn: Connection, listener: Connection, idle_wait: float
    ) -> None:
        # The listener runs no queries: psycopg drops a NOTIFY that arrives during a query.
        while not stop.is_set():
            published = self.publish(conn)
            self.failures = 0  # the table and the brokers answered: it works again
            if not published:
                for _ in listener.notifies(timeout=idle_wait, stop_after=1):
                    pass


def is_transient(error: BaseException) -> bool:
    """Whether retrying may succeed: a connection lost or refused, a lock or statement timed
    out, a deadlock, or a Kafka error Kafka calls retriable. Not a missing table, a bad
    value, a message Kafka refuses: those fail the same way every time."""
    if isinstance(error, ProducerFencedError | InvalidProducerEpochError):
        return True  # another relay took the turn: this one waits for it again
    if isinstance(error, KafkaError):
        return bool(error.retriable)
    # psycopg's OperationalError covers lost connections, timeouts, deadlocks, serialization
    # failures and shutdowns; eventsourcing wraps those from its own pool in its own classes.
    transient = (psycopg.OperationalError, psycopg.InterfaceError, OperationalError, InterfaceError)
    return isinstance(error, transient)
