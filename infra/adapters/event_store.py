"""The PostgreSQL event store: events, Kafka positions and outbox rows in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    StoredEvent,
    Tracking,
)
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

from consumers.batch import FencedTracking, Headers, OutboxMessage, header_name, header_name_bytes
from consumers.positions import PositionTable

OUTBOX_CHANNEL = "groupbuy_outbox"
SCHEMA_LOCK = 0x6762_7363  # an advisory lock key of our own ("gbsc")


class GroupBuyingRecorder(PostgresProcessRecorder):
    """eventsourcing's process recorder, taking `positions` and `outbox` with the events.

    Ingestion writes thousands of events and outbox rows a transaction, so rows go in by
    binary COPY rather than as parameters one by one; the table lock that keeps
    notification ids in commit order is taken as the library takes it.
    """

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        tracking_table_name: str | None = None,
    ) -> None:
        prefix = events_table_name.removesuffix("_events")
        super().__init__(
            datastore,
            events_table_name=events_table_name,
            tracking_table_name=tracking_table_name or f"{prefix}_tracking",
        )
        outbox = Identifier(datastore.schema, f"{prefix}_outbox")
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, topic text NOT NULL, "
                "key bytea, value bytea NOT NULL, headers jsonb NOT NULL)"
            ).format(outbox)
        )
        self.copy_outbox = SQL(
            "COPY {} (topic, key, value, headers) FROM STDIN (FORMAT BINARY)"
        ).format(outbox)
        self.copy_events = SQL(
            "COPY {} (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
        ).format(Identifier(datastore.schema, self.events_table_name))
        self.positions = PositionTable(Identifier(datastore.schema, self.tracking_table_name))

    def create_table(self) -> None:
        # Services starting side by side on a fresh database would race: on CREATE TYPE, and
        # on the tracking table's first row, which the library writes after looking for it.
        with self.datastore.get_connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
            try:
                super().create_table()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        """Store events, positions and outbox rows, all or nothing.

        Returns no notification ids: nothing in groupbuy follows them in process, and the
        relay reads them back from the table.
        """
        with self.datastore.transaction(commit=True) as curs:
            tracking: Tracking | None = kwargs.get("tracking")
            for position in [*kwargs.get("positions", ()), *([tracking] if tracking else [])]:
                self._insert_tracking(curs, position)
            outbox: Sequence[OutboxMessage] = kwargs.get("outbox", ())
            if outbox:
                self._copy_outbox(curs, outbox)
            if stored_events:
                self._lock_table(curs)
                self._notify_channel(curs)
                self._copy_events(curs, stored_events)

    def _copy_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent]) -> None:
        with curs.copy(self.copy_events) as copy:
            copy.set_types(["uuid", "int8", "text", "bytea"])
            for event in stored_events:
                copy.write_row(
                    (event.originator_id, event.originator_version, event.topic, event.state)
                )

    def _copy_outbox(self, curs: Cursor[DictRow], outbox: Sequence[OutboxMessage]) -> None:
        with curs.copy(self.copy_outbox) as copy:
            copy.set_types(["text", "bytea", "bytea", "jsonb"])
            for message in outbox:
                headers = stored_headers(message.headers)
                copy.write_row((message.topic, message.key, message.value, headers))
        curs.execute(SQL("SELECT pg_notify(%s, '')"), (OUTBOX_CHANNEL,))

    def _insert_tracking(self, curs: Cursor[DictRow], tracking: Tracking) -> None:
        if isinstance(tracking, FencedTracking):
            self.positions.move(curs, tracking)
        else:
            super()._insert_tracking(curs, tracking)


# An outbox row's headers: {"hex": [[name, value], ...]}, names and values in hex, a null
# value as null. A name may hold NUL, which jsonb refuses in text, or bytes that are not
# UTF-8 (consumers.batch.RawHeaderKey); hex keeps both byte for byte. Rows written before
# this hold [[name, value in hex], ...], and are still read.
NO_HEADERS = Jsonb({"hex": []})


def stored_headers(headers: Headers) -> Jsonb:
    """Headers as an outbox row stores them."""
    if not headers:
        return NO_HEADERS
    return Jsonb(
        {
            "hex": [
                [header_name_bytes(name).hex(), None if value is None else value.hex()]
                for name, value in headers
            ]
        }
    )


def outbox_headers(stored: Any) -> list[tuple[str, bytes]]:
    """An outbox row's headers, as kafka-python's producer takes them.

    A null value goes out empty: the producer refuses None (`KafkaProducer.send` takes only
    (str, bytes) pairs), though Kafka has null header values. The row keeps the null.
    """
    if isinstance(stored, dict):
        return [
            (header_name(bytes.fromhex(name)), b"" if value is None else bytes.fromhex(value))
            for name, value in stored["hex"]
        ]
    return [(name, bytes.fromhex(value)) for name, value in stored]  # written before hex names
