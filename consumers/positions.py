"""Kafka positions in PostgreSQL, moved only from where the mover last saw them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError
from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from consumers.batch import FencedTracking


class PositionTable:
    """Rows of (application_name, notification_id), eventsourcing's single-row tracking shape."""

    def __init__(self, table: Identifier) -> None:
        self.select = SQL(
            "SELECT application_name, notification_id FROM {} WHERE application_name = ANY(%s)"
        ).format(table)
        self.move_from = SQL(
            "INSERT INTO {0} VALUES (%(name)s, %(position)s) ON CONFLICT (application_name) "
            "DO UPDATE SET notification_id = %(position)s "
            "WHERE {0}.notification_id = %(expected)s RETURNING notification_id"
        ).format(table)
        self.first_move = SQL(
            "INSERT INTO {} VALUES (%(name)s, %(position)s) "
            "ON CONFLICT (application_name) DO NOTHING RETURNING notification_id"
        ).format(table)

    def start(self, cursor: Cursor[Any], name: str, position: int) -> None:
        """Store `position` under `name` unless a position is stored there already."""
        cursor.execute(self.first_move, {"name": name, "position": position})

    def read(self, cursor: Cursor[Any], names: Sequence[str]) -> dict[str, int | None]:
        found = dict(cursor.execute(self.select, (list(names),)).fetchall())
        return {name: found.get(name) for name in names}

    def move(self, cursor: Cursor[Any], tracking: FencedTracking) -> None:
        """Store the new position, or raise IntegrityError if another process moved it."""
        statement = self.first_move if tracking.expected is None else self.move_from
        params = {
            "name": tracking.application_name,
            "position": tracking.notification_id,
            "expected": tracking.expected,
        }
        cursor.execute(statement, params, prepare=True)
        if cursor.fetchone() is None:
            raise IntegrityError(
                f"{tracking.application_name} is no longer at {tracking.expected}: "
                "another consumer moved it"
            )
