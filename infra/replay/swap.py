"""A rebuilt set of read models made the live one, in one transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from consumers.positions import PositionTable
from consumers.projector import GENERATION
from domain.application import GroupBuying
from infra.replay.rebuilt import Rebuilt
from infra.replay.stored_events import StoredEvents
from projections.live import LiveProjection
from projections.read_models import ReadModelTables

# The tables of one set, in the order a swap locks them: the projector touches the campaigns
# table first in every transaction and the positions last, so nobody waits in a circle.
TABLES = ("campaigns", "campaign_sites", "price_history", "commitments", "positions")


def swap(
    conn: psycopg.Connection[Any], app: GroupBuying, live: ReadModelTables, rebuilt: Rebuilt
) -> tuple[str, int]:
    """Make `rebuilt` the live set; (the schema the old set was moved to, events caught up).

    In one transaction: lock the live tables (the projectors wait), apply what was stored
    since the rebuild read the store, give the rebuilt set the positions to go on from and
    the next generation, and trade the tables' schemas.
    """
    retired = f"{live.schema}_retired_{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
    with conn.transaction(), conn.cursor() as cur:
        present = [name for name in TABLES if _exists(cur, live.table(name))]
        if present:
            tables = SQL(", ").join(live.table(name) for name in present)
            cur.execute(SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(tables))
        stored = {}
        if "positions" in present:
            stored = dict(cur.execute(SQL("SELECT * FROM {}").format(live.positions)).fetchall())
        generation = stored.pop(GENERATION, 0)
        positions = PositionTable(rebuilt.tables.positions)
        caught_up = 0
        if rebuilt.source == "store":
            # A rebuild from Kafka has positions of its own; one from the store goes on from
            # the projectors' positions, with what the store gained since it was read.
            for name, offset in stored.items():
                positions.start(cur, name, offset)
            caught_up = _catch_up(cur, app, rebuilt)
        positions.start(cur, GENERATION, generation + 1)
        cur.execute(SQL("CREATE SCHEMA {}").format(Identifier(retired)))
        for name in present:
            _move(cur, live.table(name), retired)
        for name in TABLES:
            _move(cur, rebuilt.tables.table(name), live.schema)
        cur.execute(SQL("DROP SCHEMA {}").format(Identifier(rebuilt.tables.schema)))
    return retired, caught_up


def _catch_up(cur: psycopg.Cursor[Any], app: GroupBuying, rebuilt: Rebuilt) -> int:
    """Events stored after the rebuild read the store, applied as the projector applies them."""
    projection = LiveProjection(rebuilt.tables)
    events = StoredEvents(app)
    known = cur.execute(SQL("SELECT campaign_id FROM {}").format(rebuilt.tables.campaigns))
    events.know([campaign_id for (campaign_id,) in known.fetchall()])
    return sum(projection.apply(cur, event) for event in events.read(rebuilt.last_notification_id))


def _move(cur: psycopg.Cursor[Any], table: Identifier, schema: str) -> None:
    cur.execute(SQL("ALTER TABLE {} SET SCHEMA {}").format(table, Identifier(schema)))


def _exists(cur: psycopg.Cursor[Any], table: Identifier) -> bool:
    row = cur.execute(SQL("SELECT to_regclass(%s)"), (table.as_string(cur),)).fetchone()
    return row is not None and row[0] is not None
