"""How far the relay got, kept in Kafka: written in the transaction of the messages it counts.

A relay killed after Kafka committed a batch and before PostgreSQL recorded it would send the
batch again. So each of its Kafka transactions also carries a progress record, to a partition
of `groupbuy.relay-progress.v1` of its publisher's own; a relay that starts reads the last
committed one and records it in PostgreSQL before it reads any row (as Kafka Connect's exactly
once sources keep their offsets, KIP-618). The record lists the rows the publishing of one
batch has done so far, published or parked: recording it again changes nothing.
"""

from __future__ import annotations

import json
import time
from contextlib import closing
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError

from infra.adapters import kafka_clients
from infra.adapters.topics import Topics
from infra.settings import Settings

PARTITIONS = {"campaign-events": 0, "outbox": 1}  # each publisher's partition
READ_TIMEOUT = 30.0  # seconds to read a progress partition to its end
FIRST_WINDOW = 64  # offsets read back from the end first; 16 times more each time after
# A record batch of one record carries at most this much besides the record's own bytes
# (61 bytes of batch header, a record's lengths and attributes, each header's lengths).
RECORD_OVERHEAD, HEADER_OVERHEAD = 96, 10


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None

    def size(self) -> int:
        """The bytes of the record batch that carries this message alone, at most."""
        headers = sum(len(k.encode()) + len(v) + HEADER_OVERHEAD for k, v in self.headers)
        return RECORD_OVERHEAD + len(self.key or b"") + len(self.value) + headers


@dataclass(frozen=True)
class Progress:
    """Rows done by the publishing of one batch (published or parked), and the parked ones
    with the reason Kafka gave."""

    done: list[int]
    parked: list[tuple[int, str]]

    def encode(self) -> bytes:
        return json.dumps({"done": self.done, "parked": self.parked}).encode()

    @classmethod
    def decode(cls, value: bytes) -> Progress:
        data = json.loads(value)
        return cls(list(data["done"]), [(int(i), str(e)) for i, e in data["parked"]])


class ProgressLog:
    """One publisher's partition of the relay's progress topic. Its records are keyed by
    the event store's schema too: relays of two stores may share a topic prefix."""

    def __init__(self, settings: Settings, publisher: str) -> None:
        self.settings = settings
        self.key = f"{settings.database_schema}.{publisher}".encode()
        topic = Topics(settings.topic_prefix).relay_progress
        self.partition = TopicPartition(topic, PARTITIONS[publisher])

    def message(self, progress: Progress) -> Message:
        return Message(
            self.partition.topic, self.key, progress.encode(), partition=self.partition.partition
        )

    def last(self) -> Progress | None:
        """The last progress committed, or None if there is none."""
        with closing(kafka_clients.reader(self.settings)) as reader:
            reader.assign([self.partition])
            begin = reader.beginning_offsets([self.partition])[self.partition]
            end = reader.end_offsets([self.partition])[self.partition]  # committed ones
            window = FIRST_WINDOW
            while True:  # aborted transactions and markers take offsets too: look further
                start = max(begin, end - window)
                value = self._last_between(reader, start, end)
                if value is not None or start == begin:
                    return None if value is None else Progress.decode(value)
                window *= 16

    def _last_between(self, reader: KafkaConsumer, start: int, end: int) -> bytes | None:
        reader.seek(self.partition, start)
        deadline = time.monotonic() + READ_TIMEOUT
        value = None
        while reader.position(self.partition) < end:
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"could not read {self.partition} to offset {end}")
            for records in reader.poll(timeout_ms=200).values():
                for record in records:
                    if record.offset < end and record.key == self.key:
                        value = record.value
        return value
