"""The PostgreSQL event store: events, Kafka positions and outbox rows in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

from consumers.batch import FencedTracking, OutboxMessage

OUTBOX_CHANNEL = "groupbuy_outbox"


class GroupBuyingRecorder(PostgresProcessRecorder):
    """eventsourcing's process recorder, taking `positions` and `outbox` with the events."""

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
        self.outbox_table = Identifier(datastore.schema, f"{prefix}_outbox")
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, topic text NOT NULL, "
                "key bytea, value bytea NOT NULL, headers jsonb NOT NULL)"
            ).format(self.outbox_table)
        )
        tracking = Identifier(datastore.schema, self.tracking_table_name)
        self.move_position = SQL(
            "INSERT INTO {0} VALUES (%(name)s, %(position)s) ON CONFLICT (application_name) "
            "DO UPDATE SET notification_id = %(position)s "
            "WHERE {0}.notification_id = %(expected)s RETURNING notification_id"
        ).format(tracking)
        self.first_position = SQL(
            "INSERT INTO {0} VALUES (%(name)s, %(position)s) "
            "ON CONFLICT (application_name) DO NOTHING RETURNING notification_id"
        ).format(tracking)
        self.insert_outbox = SQL(
            "INSERT INTO {} (topic, key, value, headers) VALUES (%s, %s, %s, %s)"
        ).format(self.outbox_table)

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        positions: Sequence[Tracking] = kwargs.get("positions", ())
        for position in positions:
            self._insert_tracking(curs, position)
        outbox: Sequence[OutboxMessage] = kwargs.get("outbox", ())
        if outbox:
            curs.executemany(self.insert_outbox, [_outbox_row(m) for m in outbox])
            curs.execute(SQL("SELECT pg_notify(%s, '')"), (OUTBOX_CHANNEL,))
        super()._insert_events(curs, stored_events, **kwargs)

    def _insert_tracking(self, curs: Cursor[DictRow], tracking: Tracking) -> None:
        if not isinstance(tracking, FencedTracking):
            super()._insert_tracking(curs, tracking)
            return
        statement = self.first_position if tracking.expected is None else self.move_position
        params = {
            "name": tracking.application_name,
            "position": tracking.notification_id,
            "expected": tracking.expected,
        }
        curs.execute(statement, params, prepare=True)
        if curs.fetchone() is None:
            raise IntegrityError(
                f"{tracking.application_name} is no longer at {tracking.expected}: "
                "another consumer moved it"
            )


def _outbox_row(message: OutboxMessage) -> tuple[str, bytes | None, bytes, Jsonb]:
    headers = [[name, value.hex()] for name, value in message.headers]
    return message.topic, message.key, message.value, Jsonb(headers)
