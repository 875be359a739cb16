"""A rebuilt set of read models: its tables, its source, and how far it got."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from projections.read_models import ReadModelTables

Progress = Callable[[int, int], None]  # (events read so far, events to read)


@dataclass
class Rebuilt:
    """A rebuilt set of read models, and how far into its source it got."""

    tables: ReadModelTables
    source: str
    events: int = 0  # read from the source
    applied: int = 0  # changed the read models (the rest were duplicates)
    last_notification_id: int = 0  # from the event store
    positions: dict[str, int] = field(default_factory=dict)  # from Kafka
    # Always 0: a record a replay cannot apply stops it (UnappliableRecordError), as it stops
    # the projector. Kept while `infra/cli/replay.py` still prints it.
    unreadable: int = 0


def fresh_tables(conn: psycopg.Connection[Any], live: ReadModelTables) -> ReadModelTables:
    """A new, empty schema beside the live read models, for a rebuild."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    schema = f"{live.schema}_rebuild_{stamp}_{secrets.token_hex(2)}"
    conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
    return ReadModelTables(schema, live.prefix)
