"""Runs a publisher whenever a PostgreSQL table may have grown, one process at a time."""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from kafka.errors import KafkaError
from psycopg.sql import SQL, Identifier

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]
# Publishes one batch on the connection; returns how many it published (0: nothing new).
Publish = Callable[[Connection], int]


class TableFollower:
    """Wakes on NOTIFY (or every `idle_wait` seconds) and publishes until nothing is left.

    Only the holder of a session advisory lock named after `name` publishes, so two relays
    never interleave; the other one takes over when the holder's connection ends.
    """

    def __init__(self, database_url: str, name: str, channel: str, publish: Publish) -> None:
        self.database_url = database_url
        self.name = name
        self.channel = channel
        self.publish = publish
        self.lock_key = zlib.crc32(name.encode())

    def run(self, stop: threading.Event, idle_wait: float = 0.5) -> None:
        while not stop.is_set():
            try:
                with (
                    psycopg.connect(self.database_url, autocommit=True) as conn,
                    psycopg.connect(self.database_url, autocommit=True) as listener,
                ):
                    if self._take_turn(conn):
                        listener.execute(SQL("LISTEN {}").format(Identifier(self.channel)))
                        self._drain_until(stop, conn, listener, idle_wait)
            except (psycopg.Error, PersistenceError, KafkaError) as error:
                # Nothing was marked published, so the next attempt sends it again.
                log.warning("%s: %s; retrying", self.name, error)
            stop.wait(idle_wait)

    def _take_turn(self, conn: Connection) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,)).fetchone()
        return bool(row and row[0])

    def _drain_until(
        self, stop: threading.Event, conn: Connection, listener: Connection, idle_wait: float
    ) -> None:
        # The listener runs no queries: psycopg drops a NOTIFY that arrives during a query.
        while not stop.is_set():
            while self.publish(conn) and not stop.is_set():
                pass
            for _ in listener.notifies(timeout=idle_wait, stop_after=1):
                pass
