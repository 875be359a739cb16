"""A consumer loop whose positions live in PostgreSQL with the data they produced."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import psycopg
from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    PersistenceError,
    RecordConflictError,
)
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError, KafkaError
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecord, DefaultRecordBatch
from kafka.record.util import decode_varint

from consumers.batch import DependencyError, Record, RecordError, header_name, position_name

log = logging.getLogger(__name__)
RETRY_PAUSE = 1.0  # seconds before applying a batch again after a failure; doubled each time
MAX_RETRY_PAUSE = 30.0
# More records than this in a row that cannot be saved look like a fault of the service
# (a bug, a broken table), not of the records: stop rather than dead-letter them all.
MAX_PARKED_IN_A_ROW = 8
Commit = Callable[[dict[TopicPartition, OffsetAndMetadata]], object]
Saved = Callable[[int, float], None]  # records and seconds of a batch saved whole
Lagging = Callable[[dict[TopicPartition, int]], None]  # each assigned partition's lag
LAG_EVERY = 1.0  # seconds between two reports of the lag


def lag_of(consumer: KafkaConsumer) -> dict[TopicPartition, int]:
    """Records on each assigned partition after the consumer's position: the high watermark
    of its last fetch minus the position, for the partitions fetched from.

    Read from what the consumer knows, with no request: `KafkaConsumer.position` may refresh
    committed offsets, reset or validate positions first, which is not a metric's business
    (and is no call to make between a transactional consumer's polls). Reading committed
    records only, a consumer's position steps over transaction markers, so an idle
    consumer's lag is 0."""
    lag = {}
    states = consumer._subscription.assignment  # kafka-python 3.0.12 (pinned)
    for partition, state in list(states.items()):
        end = consumer.highwater(partition)
        position = state.position
        if end is not None and position is not None:
            lag[partition] = max(0, end - position.offset)
    return lag


class LagReport:
    """Tells `lagging` a consumer's lag at most every LAG_EVERY seconds, once its group has
    assigned it partitions (maybe none). A report that fails is dropped: a gauge must never
    stop a service."""

    def __init__(self, lagging: Lagging | None) -> None:
        self.lagging = lagging
        self.due = 0.0  # time.monotonic() after which the lag is reported again
        self.joined = False  # whether partitions (maybe none) were assigned yet

    def __call__(self, consumer: KafkaConsumer) -> None:
        if self.lagging is not None and self.joined and time.monotonic() >= self.due:
            self.due = time.monotonic() + LAG_EVERY
            try:
                self.lagging(lag_of(consumer))
            except Exception:
                log.debug("the lag could not be reported", exc_info=True)


class BatchSink(Protocol):
    """Applies polled records and saves the result with the new positions, atomically."""

    def stored_positions(self, names: Sequence[str]) -> dict[str, int | None]: ...

    def process(self, records: Sequence[Record], expected: dict[str, int | None]) -> None:
        """Apply and save; the save must refuse if a position is no longer `expected`.

        The loop may call it with part of a batch (to find a record whose data the database
        refuses), with `expected` moved on by the parts saved before."""

    def forget(self) -> None:
        """Drop in-memory state that a failed save may have left ahead of the database."""


@runtime_checkable
class DeadLetterSink(BatchSink, Protocol):
    """A sink that can set a record aside. Without `park`, the loop stops at such a record."""

    def park(self, record: Record, reason: str, expected: dict[str, int | None]) -> None:
        """Save `record` as a dead letter saying `reason`, and its position, atomically."""


class RecordStuckError(RuntimeError):
    """A record that can be neither saved nor set aside: the consumer stops, naming it."""

    def __init__(self, record: Record, reason: str) -> None:
        super().__init__(
            f"cannot apply the record at {record.topic}:{record.partition} offset "
            f"{record.offset}: {reason}"
        )
        self.record = record


class RecordsLostError(RuntimeError):
    """Records the stored position says are still to apply are gone from their partition."""


class TrackedLoop(ConsumerRebalanceListener):  # type: ignore[misc]
    """Poll, process, save; on assignment or any failure, go back to the stored positions.

    A failure is one of three kinds. A position another process moved: reread the
    positions, at once. A dependency down (the database, Kafka): the same, after a pause that
    doubles up to MAX_RETRY_PAUSE while it lasts. Data the database or the encoder refuses:
    the batch is saved in parts to find the records at fault, each set aside as a dead
    letter with its position, so that no batch is retried forever. Anything else stops it.
    """

    def __init__(
        self,
        consumer: KafkaConsumer,
        sink: BatchSink,
        max_records: int = 2000,
        commit: Commit | None = None,
        saved: Saved | None = None,
        lagging: Lagging | None = None,
    ) -> None:
        """`commit` tells Kafka how far the saved batches got (default: the consumer's own
        `commit_async`; a worker without a group reports to the process that has one).
        `saved` is told the records and seconds of each batch saved whole, and `lagging`
        each partition's lag, at most every LAG_EVERY seconds (the metrics)."""
        self.consumer = consumer
        self.sink = sink
        self.max_records = max_records
        self.commit: Commit = commit or consumer.commit_async
        self.saved = saved
        self.report_lag = LagReport(lagging)
        self.positions: dict[str, int | None] = {}
        # Where a partition is read from when that is not after its stored position: its
        # topic was made again, so the offsets began again (see `_seek_past`).
        self.floors: dict[str, int] = {}
        self.lost: RecordsLostError | None = None  # found while assigned: raised at the poll
        # Assigned with a stored position, paused until the next poll looks at where the
        # partition begins and ends (`_check_assigned`).
        self.unchecked: dict[TopicPartition, int] = {}
        self.failures = 0  # dependency failures since the last batch saved
        self.conflicts = 0  # position conflicts since the last batch saved
        self.parked_in_a_row = 0
        self.resume_at = 0.0  # time.monotonic() before which nothing is tried
        self.stale = False  # the positions must be read again before the next poll
        read_raw_header_keys(consumer)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll_once()

    def poll_once(self, timeout_ms: int = 200) -> int:
        """One batch: the number of records applied (0 if none came, or after a failure).

        While pausing after a failure it waits at most `timeout_ms`, and returns 0."""
        if self.lost is not None:
            raise self.lost
        self.report_lag(self.consumer)
        if not self._ready(timeout_ms):
            return 0
        try:
            applied = self._apply_next(timeout_ms)
        except Exception as error:
            self._failed(error)
            return 0
        if applied:
            self.failures = self.conflicts = 0
        return applied

    def _ready(self, timeout_ms: int) -> bool:
        wait = self.resume_at - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout_ms / 1000))
            return False
        if self.stale:
            try:
                self._rewind()
            except Exception as error:
                self._failed(error)
                return False
            self.stale = False
        return True

    def _apply_next(self, timeout_ms: int) -> int:
        if self.unchecked:
            self._check_assigned()
            if self.lost is not None:
                return 0  # raised by the next poll_once, before anything else
        polled = self._poll(timeout_ms)
        records: list[Record] = []
        expected: dict[str, int | None] = {}  # each partition's stored position
        last: dict[TopicPartition, int] = {}  # and where this batch moves it
        for partition, batch in polled.items():
            name = position_name(partition.topic, partition.partition)
            stored = self.positions.get(name)
            # Anything at or before a stored position was applied already (a late seek, a retry).
            floor = self.floors.get(name, stored)
            fresh = [self._record(r) for r in batch if floor is None or r.offset > floor]
            if fresh:
                records += fresh
                expected[name] = stored
                last[partition] = fresh[-1].offset
        if not records:
            return 0
        self._save(records, expected)
        self._moved_to(last)
        return len(records)

    def _poll(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        try:
            polled: dict[TopicPartition, list[Any]]
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.max_records)
        except CorruptRecordError as error:
            self._skip_unreadable(error)
            return {}
        return polled

    def _save(self, records: Sequence[Record], expected: dict[str, int | None]) -> None:
        """Apply and save `records`; if their data makes that fail, set the records at fault
        aside and save the others."""
        started = time.perf_counter()
        try:
            self.sink.process(records, expected)
        except Exception as error:
            if not is_record_fault(error):
                raise
            self.sink.forget()
            self._save_around(records, expected, error)
            return
        self.parked_in_a_row = 0
        if self.saved is not None:
            self.saved(len(records), time.perf_counter() - started)

    def _save_around(
        self, records: Sequence[Record], expected: dict[str, int | None], error: Exception
    ) -> None:
        """Save `records` without the ones at fault: the one the error names, else the single
        record, else each half in turn (about 2 log2(n) saves for one bad record in n)."""
        at = _named(error, records)
        if at is None and len(records) == 1:
            at = 0
        if at is None:
            log.warning(
                "saving %d records failed (%s); saving them in halves to find the ones at fault",
                len(records),
                _described(error),
            )
            middle = len(records) // 2
            self._save_part(records[:middle], expected)
            self._save_part(records[middle:], expected)
            return
        self._save_part(records[:at], expected)
        if isinstance(error, RecordError):
            reason = error.reason
        else:
            reason = f"cannot be saved: {_described(error)}"
        self._park(records[at], reason, expected, error)
        expected[records[at].position_name] = records[at].offset
        self._save_part(records[at + 1 :], expected)

    def _save_part(self, records: Sequence[Record], expected: dict[str, int | None]) -> None:
        if records:
            self._save(records, expected)
            for record in records:  # the next part moves its partitions on from here
                expected[record.position_name] = record.offset

    def _park(
        self, record: Record, reason: str, expected: dict[str, int | None], cause: Exception
    ) -> None:
        """Set `record` aside as a dead letter saying `reason`, with its position."""
        if not isinstance(self.sink, DeadLetterSink):
            raise RecordStuckError(record, reason) from cause
        self.parked_in_a_row += 1
        if self.parked_in_a_row > MAX_PARKED_IN_A_ROW:
            why = f"{reason} (and so did the {MAX_PARKED_IN_A_ROW} records before it)"
            raise RecordStuckError(record, why) from cause
        log.error(
            "%s@%d %s; it goes to the dead-letter queue",
            record.position_name,
            record.offset,
            reason,
            # GROUPBUY_LOG_FORMAT=json shows where it is as fields of their own.
            extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
        )
        try:
            self.sink.park(record, reason, expected)
        except Exception as failure:
            if is_record_fault(failure):
                why = f"{reason}; nor can its dead letter: {_described(failure)}"
                raise RecordStuckError(record, why) from failure
            raise

    def _skip_unreadable(self, error: CorruptRecordError) -> None:
        """Set aside the record kafka-python cannot read, and go on after it.

        kafka-python raises for the whole fetch, and its next poll would spin for ever on
        the same position: the record is set aside as a stub naming where it is (its bytes
        are out of reach), and the consumer moves past it.
        """
        where = _unreadable_at(self.consumer)
        if where is None:
            nowhere = Record("(not said)", -1, -1, -1, None, None)
            raise RecordStuckError(nowhere, f"the Kafka client cannot read it: {error}") from error
        partition, offset = where
        name = position_name(partition.topic, partition.partition)
        stub = Record(partition.topic, partition.partition, offset, -1, None, None)
        reason = f"the Kafka client cannot read it: {error}"
        self._park(stub, reason, {name: self.positions.get(name)}, error)
        self.positions[name] = offset
        self.consumer.seek(partition, offset + 1)

    def _failed(self, error: Exception) -> None:
        """Go back to the stored positions, now or after a pause; raise what no retry mends."""
        self.stale = True
        if is_conflict(error):
            self.conflicts += 1
            log.warning("another process moved on (%s); rereading positions", error)
            if self.conflicts > 1:  # again and again: not a race any more; give it time
                self._pause(f"positions moved {self.conflicts} times in a row", logging.WARNING)
            return
        if not is_transient(error):
            raise error
        passing = isinstance(error, TRANSIENT)
        self._pause(_described(error), logging.WARNING if passing else logging.ERROR)

    def _pause(self, why: str, level: int) -> None:
        pause = min(RETRY_PAUSE * 2**self.failures, MAX_RETRY_PAUSE)
        self.failures += 1
        log.log(level, "applying a batch failed (%s); trying again in %.0f s", why, pause)
        self.resume_at = time.monotonic() + pause

    def _moved_to(self, last: dict[TopicPartition, int]) -> None:
        for partition, offset in last.items():
            name = position_name(partition.topic, partition.partition)
            self.positions[name] = offset
            self.floors.pop(name, None)
        # Kafka's committed offsets only show lag; the database holds the real positions.
        self.commit(
            {partition: OffsetAndMetadata(offset + 1, "", -1) for partition, offset in last.items()}
        )

    def _rewind(self) -> None:
        self.sink.forget()
        self.on_partitions_assigned(list(self.consumer.assignment()))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Seek each partition after its stored position, once the next poll has checked
        that the records after it are still there.

        kafka-python calls this on its IO thread for a rebalance after the first (a site's
        new orders topic, a member joining), where a call that waits for Kafka (the
        partitions' first and last offsets) fails: the partitions are paused instead, and
        the poll that follows looks at their offsets first (`_check_assigned`).
        """
        log.info("assigned %s", ", ".join(f"{p.topic}:{p.partition}" for p in assigned) or "none")
        self.report_lag.joined = True
        stored = self.sink.stored_positions([position_name(p.topic, p.partition) for p in assigned])
        for partition in assigned:
            name = position_name(partition.topic, partition.partition)
            position = stored[name]
            self.positions[name] = position
            self.floors.pop(name, None)
            if position is None:
                self.unchecked.pop(partition, None)
                self.consumer.seek_to_beginning(partition)
            else:
                self.unchecked[partition] = position
        if self.unchecked:
            self.consumer.pause(*self.unchecked)

    def _check_assigned(self) -> None:
        """Seek the partitions assigned since the last poll past their stored positions (or
        where `_seek_past` says), and let them be fetched again."""
        assigned = self.consumer.assignment()
        partitions = [p for p in self.unchecked if p in assigned]
        begins = self.consumer.beginning_offsets(partitions) if partitions else {}
        ends = self.consumer.end_offsets(partitions) if partitions else {}
        for partition in partitions:
            self._seek_past(
                partition, self.unchecked[partition], begins[partition], ends[partition]
            )
        self.unchecked.clear()
        self.consumer.resume(*partitions)

    def _seek_past(self, partition: TopicPartition, position: int, begin: int, end: int) -> None:
        """Seek after `position`, unless records after it are gone: a topic made again (its
        offsets begin again, below the position) or records deleted by retention before
        they were read. A sink that sets records aside (ingestion) logs the loss as an error
        and reads on from what there is; any other (the read models) stops, naming it."""
        where = f"{partition.topic}:{partition.partition}"
        if end <= position:
            lost = (
                f"{where} ends at offset {end}, at or before the position {position} already "
                "applied: the topic was deleted and made again, or truncated"
            )
            self.floors[position_name(partition.topic, partition.partition)] = begin - 1
        elif begin > position + 1:
            lost = (
                f"{where} starts at offset {begin}: the records at offsets {position + 1} to "
                f"{begin - 1} were deleted (retention) before they were applied"
            )
        else:
            self.consumer.seek(partition, position + 1)
            return
        if not isinstance(self.sink, DeadLetterSink):
            self.lost = RecordsLostError(f"{lost}: stopping here rather than skip them")
            log.error("%s", self.lost)
            return
        log.error("%s; they get no answer, and reading goes on from offset %d", lost, begin)
        self.consumer.seek(partition, begin)

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for partition in revoked:
            self.positions.pop(position_name(partition.topic, partition.partition), None)
            self.unchecked.pop(partition, None)
        self.sink.forget()

    @staticmethod
    def _record(record: Any) -> Record:
        return Record(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            tuple(record.headers or ()),
        )


# What a failure says about what to do next.

# Dependencies that come back by themselves: retried with a pause, logged as a warning.
TRANSIENT = (
    DependencyError,
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    KafkaError,
    OSError,
    MemoryError,
)


def is_conflict(error: BaseException) -> bool:
    """Another process moved a position (a fenced save, eventsourcing's tracking) or wrote a
    campaign (a unique violation on the events): reread and apply again.

    Not any IntegrityError: a NOT NULL or CHECK violation would fail the same way for ever.
    """
    if not isinstance(error, RecordConflictError):
        return False
    cause = error.__cause__
    return cause is None or isinstance(cause, psycopg.errors.UniqueViolation)


def is_record_fault(error: BaseException) -> bool:
    """Whether the data of some record can make this fail, and only that data: a value the
    database refuses, one the encoder cannot write, a record named as unappliable."""
    if isinstance(error, IntegrityError | psycopg.IntegrityError):
        return not is_conflict(error)
    faults = RecordError | DataError | psycopg.DataError | ValueError | ArithmeticError
    return isinstance(error, faults | RecursionError)


def is_transient(error: BaseException) -> bool:
    """Worth the same batch again after a pause: a dependency down, or a database error that
    no record causes (a table missing, a privilege revoked: an operator mends those, and is
    told so in the log every time)."""
    return isinstance(error, (*TRANSIENT, PersistenceError, psycopg.Error))


def _described(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _named(error: Exception, records: Sequence[Record]) -> int | None:
    """The index of the record a RecordError names, if it is one of `records`."""
    if isinstance(error, RecordError):
        for index, record in enumerate(records):
            if record is error.record or record == error.record:
                return index
    return None


def _unreadable_at(consumer: KafkaConsumer) -> tuple[TopicPartition, int] | None:
    """The partition and offset of the record kafka-python failed to read, if it says.

    kafka-python 3.0.12 keeps the partition's records it was reading in
    `_fetcher._next_partition_records`, whose `next_fetch_offset` is the offset after the
    last record it read: the unreadable one. They are dropped here.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    reading = getattr(fetcher, "_next_partition_records", None)
    partition = getattr(reading, "topic_partition", None)
    offset = getattr(reading, "next_fetch_offset", None)
    if reading is not None:
        # Else the next poll would take the same records again, find none, and spin for ever.
        reading.drain()
    if not isinstance(partition, TopicPartition) or not isinstance(offset, int):
        return None
    if partition not in consumer.assignment():
        return None
    return partition, max(offset, consumer.position(partition))


# Header names that are not UTF-8. kafka-python 3.0.12 decodes every header name with
# `.decode("utf-8")` (kafka/record/default_records.py, `_read_msg`). A name that is not UTF-8
# (Kafka does not check) makes `poll()` raise CorruptRecordError for the whole fetch; the
# next poll then spins for ever on the same position, and the records after it in its
# producer batch cannot be read at all, since reading them reads it again. Read such names
# as RawHeaderKey instead: the record is then an ordinary one, byte for byte.


def read_raw_header_keys(consumer: KafkaConsumer) -> bool:
    """Make `consumer` read header names that are not UTF-8 rather than fail on them.

    False if this kafka-python has no place for it: such a record then makes `poll()`
    raise, and TrackedLoop sets it aside as a stub.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "PartitionRecords"):
        log.warning("this kafka-python cannot be taught header names that are not UTF-8")
        return False
    fetcher.PartitionRecords = _RawKeyPartitionRecords
    return True


class _RawKeyRecordBatch(DefaultRecordBatch):  # type: ignore[misc]
    """A batch whose records read header names that are not UTF-8 as RawHeaderKey."""

    __slots__ = ()

    def _read_msg(self, decode_varint: Any = decode_varint) -> Any:
        try:
            return DefaultRecordBatch._read_msg(self, decode_varint)
        except UnicodeDecodeError:
            if self.is_control_batch:
                raise
            return _read_keeping_raw_names(self)


class _RawKeyMemoryRecords(MemoryRecords):  # type: ignore[misc]
    __slots__ = ()

    def next_batch(self, *args: Any, **kwargs: Any) -> Any:
        batch = super().next_batch(*args, **kwargs)
        if type(batch) is DefaultRecordBatch:
            batch.__class__ = _RawKeyRecordBatch  # the same slots: a cast, not a copy
        return batch


class _RawKeyPartitionRecords(Fetcher.PartitionRecords):  # type: ignore[misc]
    def __init__(self, fetch_offset: int, tp: TopicPartition, records: Any, **options: Any):
        if type(records) is MemoryRecords:
            records.__class__ = _RawKeyMemoryRecords
        super().__init__(fetch_offset, tp, records, **options)


def _read_keeping_raw_names(batch: Any) -> DefaultRecord:
    """The record at the batch's read position, read as kafka-python reads it (record
    format v2), but with header names kept as RawHeaderKey when they are not UTF-8."""
    buffer, pos = batch._buffer, batch._pos
    length, pos = decode_varint(buffer, pos)
    start = pos
    _, pos = decode_varint(buffer, pos)  # attributes: none defined for records
    timestamp_delta, pos = decode_varint(buffer, pos)
    offset_delta, pos = decode_varint(buffer, pos)
    key, pos = _nullable_bytes(buffer, pos)
    value, pos = _nullable_bytes(buffer, pos)
    count, pos = decode_varint(buffer, pos)
    headers = []
    for _ in range(count):
        name, pos = _nullable_bytes(buffer, pos)
        header_value, pos = _nullable_bytes(buffer, pos)
        if name is None:
            raise ValueError("a record header without a name")
        headers.append((header_name(name), header_value))
    if pos - start != length:
        raise ValueError(f"a record of {length} bytes read as {pos - start}")
    batch._pos = pos
    appended = batch.timestamp_type == batch.LOG_APPEND_TIME
    timestamp = batch.max_timestamp if appended else batch.first_timestamp + timestamp_delta
    offset = batch.base_offset + offset_delta
    return DefaultRecord(length, offset, timestamp, batch.timestamp_type, key, value, headers)


def _nullable_bytes(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buffer, pos)
    if size < 0:
        return None, pos
    return bytes(buffer[pos : pos + size]), pos + size
