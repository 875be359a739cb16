"""What a consumer works with: records it polled, messages it will publish, positions it moves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from eventsourcing.persistence import Tracking

Headers = tuple[tuple[str, bytes], ...]


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
