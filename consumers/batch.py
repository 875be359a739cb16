"""What a consumer works with: records it polled, messages it will publish, positions it moves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from eventsourcing.persistence import Tracking

# Kafka header values may be null (kafka-python gives None); names are text, see RawHeaderKey.
Headers = tuple[tuple[str, bytes | None], ...]


class RawHeaderKey(str):
    """A Kafka header name that is not UTF-8, kept byte for byte.

    Kafka does not check header names, so a site can send any bytes. The text holds the
    bytes that are not UTF-8 as lone surrogates (Python's "surrogateescape"), and `encode`
    gives the original bytes back whatever it is asked: kafka-python's producer, which
    writes a name as `name.encode("utf-8")`, then publishes the name exactly as received.
    """

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, "utf-8", "surrogateescape")


def header_name(raw: bytes) -> str:
    """A header name from its bytes: text if they are UTF-8, else a RawHeaderKey."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return RawHeaderKey(raw.decode("utf-8", "surrogateescape"))


def header_name_bytes(name: str) -> bytes:
    """The bytes of a header name, as Kafka carries it."""
    return name.encode("utf-8", "surrogateescape")


class Record(NamedTuple):
    """A Kafka record, without the client library's types, so handlers test without a broker.

    A named tuple: one is made for every record polled, and a frozen dataclass costs four
    times as much to build.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()

    @property
    def appended_at(self) -> datetime:
        """When the broker appended it (the orders topic uses LogAppendTime)."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)

    @property
    def position_name(self) -> str:
        return position_name(self.topic, self.partition)


def position_name(topic: str, partition: int) -> str:
    """The tracking name of a partition, "topic:partition"."""
    return f"{topic}:{partition}"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A Kafka message to publish once the transaction that wrote it has committed."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()


@dataclass(frozen=True)
class FencedTracking(Tracking):
    """A Kafka position that may only move on from `expected` (None: never stored yet).

    A consumer that lost its partition to another process, yet still saves a batch, finds
    the position moved and its whole transaction refused, so no record is applied twice.
    """

    expected: int | None = None


class DependencyError(Exception):
    """The database (or another dependency) failed while a batch was applied.

    No record is at fault: the loop applies the batch again after a pause, and sets no
    record aside for it.
    """


class RecordError(Exception):
    """One record of a batch cannot be applied: the loop saves the others, and sets this
    one aside as a dead letter (or stops, naming it, where there is no dead-letter queue)."""

    def __init__(self, record: Record, reason: str) -> None:
        super().__init__(f"{record.topic}:{record.partition} at offset {record.offset}: {reason}")
        self.record = record
        self.reason = reason
