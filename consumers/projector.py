"""`groupbuy project`: campaign events into read models, rows and position in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg

from consumers.batch import FencedTracking, Record
from consumers.positions import PositionTable
from projections.live import LiveProjection
from projections.read_models import ReadModelTables
from projections.wire import CampaignEvent, decode

log = logging.getLogger(__name__)
SCHEMA_LOCK = 0x6762_726D  # serialises CREATE TABLE among projectors starting together
# A row of the positions table that `groupbuy replay --swap` moves when it puts a rebuilt set
# of read models in place: every save is fenced on it too, so a projector that was writing
# to the old set fails its next save, forgets what it remembered, and rereads its positions.
GENERATION = "read-models:generation"


class ProjectorSink:
    def __init__(self, database_url: str, tables: ReadModelTables) -> None:
        self.database_url = database_url
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.projection = LiveProjection(tables)
        self.positions = PositionTable(tables.positions)
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            self.conn.execute(tables.create_statement())
            self.positions.start(self.conn.cursor(), GENERATION, 0)
        self.generation = 0

    def close(self) -> None:
        self.conn.close()

    def stored_positions(self, names: Sequence[str]) -> dict[str, int | None]:
        with self.conn.transaction():
            stored = self.positions.read(self.conn.cursor(), [*names, GENERATION])
        self.generation = stored.pop(GENERATION) or 0
        return stored

    def process(self, records: Sequence[Record], expected: dict[str, int | None]) -> None:
        last: dict[str, int] = {}
        # Pipelined: the statements of a whole batch go out without waiting for each reply.
        with self.conn.pipeline(), self.conn.transaction(), self.conn.cursor() as cur:
            for record in records:
                last[record.position_name] = record.offset
                event = _decoded(record)
                if event is not None:
                    self.projection.apply(cur, event)
            for name, offset in last.items():
                self.positions.move(cur, FencedTracking(name, offset, expected=expected[name]))
            generation = self.generation
            self.positions.move(cur, FencedTracking(GENERATION, generation, expected=generation))

    def forget(self) -> None:
        self.projection.forget()
        if self.conn.broken or self.conn.closed:
            self.conn = psycopg.connect(self.database_url, autocommit=True)


def _decoded(record: Record) -> CampaignEvent | None:
    try:
        return decode(record.value or b"")
    except (ValueError, KeyError, TypeError) as error:
        # Only the relay writes this topic; a bad record is a bug to see, not to stop on.
        log.error(
            "unreadable campaign event at %s@%d: %s", record.position_name, record.offset, error
        )
        return None
