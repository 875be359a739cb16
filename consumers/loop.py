"""A consumer loop whose positions live in PostgreSQL with the data they produced."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import psycopg
from eventsourcing.persistence import PersistenceError, RecordConflictError
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition

from consumers.batch import Record, position_name

log = logging.getLogger(__name__)
RETRY_PAUSE = 1.0  # seconds before applying a batch again after the database failed
Commit = Callable[[dict[TopicPartition, OffsetAndMetadata]], object]


class BatchSink(Protocol):
    """Applies polled records and saves the result with the new positions, atomically."""

    def stored_positions(self, names: Sequence[str]) -> dict[str, int | None]: ...

    def process(self, records: Sequence[Record], expected: dict[str, int | None]) -> None:
        """Apply and save; the save must refuse if a position is no longer `expected`."""

    def forget(self) -> None:
        """Drop in-memory state that a failed save may have left ahead of the database."""


class TrackedLoop(ConsumerRebalanceListener):  # type: ignore[misc]
    """Poll, process, save; on assignment or any failure, go back to the stored positions."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        sink: BatchSink,
        max_records: int = 2000,
        commit: Commit | None = None,
    ) -> None:
        """`commit` tells Kafka how far the saved batches got (default: the consumer's own
        `commit_async`; a worker without a group reports to the process that has one)."""
        self.consumer = consumer
        self.sink = sink
        self.max_records = max_records
        self.commit: Commit = commit or consumer.commit_async
        self.positions: dict[str, int | None] = {}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll_once()

    def poll_once(self, timeout_ms: int = 200) -> int:
        """One batch: the number of records applied (0 if none came or the save failed)."""
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.max_records)
        records: list[Record] = []
        expected: dict[str, int | None] = {}  # each partition's stored position
        last: dict[TopicPartition, int] = {}  # and where this batch moves it
        for partition, batch in polled.items():
            name = position_name(partition.topic, partition.partition)
            stored = self.positions.get(name)
            # Anything at or before a stored position was applied already (a late seek, a retry).
            fresh = [self._record(r) for r in batch if stored is None or r.offset > stored]
            if fresh:
                records += fresh
                expected[name] = stored
                last[partition] = fresh[-1].offset
        if not records:
            return 0
        try:
            self.sink.process(records, expected)
        except RecordConflictError as error:
            log.warning("another process moved on (%s); rereading positions", error)
            self._rewind()
            return 0
        except (PersistenceError, psycopg.Error) as error:
            log.warning("saving a batch failed (%s); retrying in %.0f s", error, RETRY_PAUSE)
            threading.Event().wait(RETRY_PAUSE)
            self._rewind()
            return 0
        self._moved_to(last)
        return len(records)

    def _moved_to(self, last: dict[TopicPartition, int]) -> None:
        for partition, offset in last.items():
            self.positions[position_name(partition.topic, partition.partition)] = offset
        # Kafka's committed offsets only show lag; the database holds the real positions.
        self.commit(
            {partition: OffsetAndMetadata(offset + 1, "", -1) for partition, offset in last.items()}
        )

    def _rewind(self) -> None:
        self.sink.forget()
        self.on_partitions_assigned(list(self.consumer.assignment()))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}:{p.partition}" for p in assigned) or "none")
        stored = self.sink.stored_positions([position_name(p.topic, p.partition) for p in assigned])
        for partition in assigned:
            position = stored[position_name(partition.topic, partition.partition)]
            self.positions[position_name(partition.topic, partition.partition)] = position
            if position is None:
                self.consumer.seek_to_beginning(partition)
            else:
                self.consumer.seek(partition, position + 1)

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for partition in revoked:
            self.positions.pop(position_name(partition.topic, partition.partition), None)
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
