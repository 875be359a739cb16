"""`groupbuy project`: campaign events into read models, rows and position in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from typing import Any

import psycopg
from eventsourcing.persistence import IntegrityError
from psycopg import pq
from psycopg.sql import SQL

from consumers.batch import FencedTracking, Record
from consumers.positions import PositionTable
from projections.live import LiveProjection
from projections.read_models import ReadModelTables
from projections.wire import decode

log = logging.getLogger(__name__)
SCHEMA_LOCK = 0x6762_726D  # serialises CREATE TABLE among projectors starting together
# A row of the positions table that `groupbuy replay --swap` moves when it puts a rebuilt set
# of read models in place: every save is fenced on it too, so a projector that was writing
# to the old set fails its next save, forgets what it remembered, and rereads its positions.
GENERATION = "read-models:generation"


class UnappliableRecordError(Exception):
    """A record of an internal topic that a service cannot apply: a bug or a forged message.

    Not a database or Kafka error, so that no retry loop takes it for a passing outage: the
    service stops with it (docs/contract.md, "Guarantees"), naming where the record is.
    """

    def __init__(self, topic: str, partition: int, offset: int, reason: str) -> None:
        super().__init__(
            f"cannot apply the record at {topic}:{partition} offset {offset}: {reason}"
        )
        self.topic, self.partition, self.offset, self.reason = topic, partition, offset, reason

    def names(self, record: Record) -> bool:
        return (record.topic, record.partition, record.offset) == self.position

    @property
    def position(self) -> tuple[str, int, int]:
        return self.topic, self.partition, self.offset


class ProjectorSink:
    def __init__(self, conninfo: str, tables: ReadModelTables) -> None:
        self.conninfo = conninfo  # a URL or key=value conninfo, as psycopg takes it
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.projection = LiveProjection(tables)
        self.positions = PositionTable(tables.positions)
        self.channel = tables.channel
        self.lock_positions = SQL(
            "SELECT application_name, notification_id FROM {} "
            "WHERE application_name = ANY(%s) FOR UPDATE"
        ).format(tables.positions)
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            cur.execute(tables.create_statement())
            widened = tables.widen(cur)
            self.positions.start(cur, GENERATION, 0)
        if widened:
            log.warning("read-model columns widened to bigint: %s", ", ".join(widened))
        self.generation = 0

    def close(self) -> None:
        self.conn.close()

    def stored_positions(self, names: Sequence[str]) -> dict[str, int | None]:
        with self.conn.transaction():
            stored = self.positions.read(self.conn.cursor(), [*names, GENERATION])
        self.generation = stored.pop(GENERATION) or 0
        return stored

    def process(self, records: Sequence[Record], expected: dict[str, int | None]) -> None:
        """Apply and save the records; stop at one that cannot be applied, after saving
        those before it, so that the read models and the positions end just there."""
        try:
            self._save_naming_refusals(records, expected)
        except UnappliableRecordError as error:
            self.projection.forget()
            before = records[: next(i for i, r in enumerate(records) if error.names(r))]
            if before:
                self.process(before, expected)  # raises for an earlier one, if there is one
            raise

    def _save_naming_refusals(
        self, records: Sequence[Record], expected: dict[str, int | None]
    ) -> None:
        try:
            self._save(records, expected)
        except (psycopg.DataError, psycopg.IntegrityError):
            # The database refused a value, and a pipeline says so only once it syncs: the
            # batch again, a statement at a time, so that the refusal names its record.
            self.projection.forget()
            self._save(records, expected, pipelined=False)

    def _save(
        self, records: Sequence[Record], expected: dict[str, int | None], pipelined: bool = True
    ) -> None:
        last: dict[str, int] = {}
        changed: set[str] = set()
        # Pipelined: the statements of a whole batch go out without waiting for each reply.
        with self._pipeline(pipelined), self.conn.transaction(), self.conn.cursor() as cur:
            if not pipelined:
                self._hold_positions(cur, expected)
            # Pipelined, a campaign's row is written once a batch; a statement at a time,
            # each event's own writes, so that a refusal names its record.
            with self.projection.coalescing(cur) if pipelined else nullcontext():
                for record in records:
                    last[record.position_name] = record.offset
                    changed.add(self._apply(cur, record, refusals_are_its_own=not pipelined))
            for name, offset in last.items():
                self.positions.move(cur, FencedTracking(name, offset, expected=expected[name]))
            generation = self.generation
            self.positions.move(cur, FencedTracking(GENERATION, generation, expected=generation))
            # Delivered to listeners when the transaction commits, and only then.
            for campaign_id in sorted(changed):
                cur.execute("SELECT pg_notify(%s, %s)", (self.channel, campaign_id))

    def _pipeline(self, pipelined: bool) -> Any:
        return self.conn.pipeline() if pipelined else nullcontext()

    def _hold_positions(self, cur: psycopg.Cursor[Any], expected: dict[str, int | None]) -> None:
        """Lock this batch's positions as expected, or raise IntegrityError: while they are
        held, no other projector writes these partitions' campaigns, so whatever the database
        refuses next is the record's own doing, not a race."""
        names = [*expected, GENERATION]
        found = dict(cur.execute(self.lock_positions, (names,)).fetchall())
        wanted = expected | {GENERATION: self.generation}
        moved = [name for name in names if found.get(name) != wanted[name]]
        if moved:
            raise IntegrityError(f"{', '.join(moved)} moved on: another projector saved")

    def _apply(self, cur: psycopg.Cursor[Any], record: Record, refusals_are_its_own: bool) -> str:
        """Apply `record`'s event; the campaign it changed."""
        with _unappliable(record, refusals_are_its_own):
            event = decode(record.value or b"")
            self.projection.apply(cur, event)
        return event.campaign_id

    def forget(self) -> None:
        self.projection.forget()
        if not _usable(self.conn):
            with suppress(psycopg.Error):
                self.conn.close()
            self.conn = psycopg.connect(self.conninfo, autocommit=True)


def _usable(conn: psycopg.Connection[Any]) -> bool:
    """Whether `conn` can take the next batch: open, and idle outside any pipeline.

    A server that went away in the middle of a pipeline leaves psycopg's connection neither
    closed nor broken but still in pipeline mode ("cannot exit pipeline mode while busy"),
    refusing every query after: only a new connection gets past it.
    """
    if conn.broken or conn.closed:
        return False
    idle = conn.info.transaction_status == pq.TransactionStatus.IDLE
    return idle and conn.pgconn.pipeline_status == pq.PipelineStatus.OFF


@contextmanager
def _unappliable(record: Record, refusals_are_its_own: bool) -> Iterator[None]:
    """Whatever stops `record` from being applied, as an UnappliableRecordError naming it.

    A database error is the record's only when psycopg refused the value before sending it
    (no SQLSTATE), or when statements go one at a time; else it may be an earlier
    statement's, or an outage, and goes to the caller.
    """
    try:
        yield
    except psycopg.Error as error:
        refused = isinstance(error, psycopg.DataError | psycopg.IntegrityError)
        if refused and (refusals_are_its_own or error.sqlstate is None):
            raise _unappliable_record(record, f"the database refused it: {error}") from error
        raise
    except Exception as error:  # a missing field, a bad decimal, a gap: never skipped
        raise _unappliable_record(record, f"{type(error).__name__}: {error}") from error


def _unappliable_record(record: Record, reason: str) -> UnappliableRecordError:
    return UnappliableRecordError(record.topic, record.partition, record.offset, reason)
