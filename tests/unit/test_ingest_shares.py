"""How `ingest --workers N` shares partitions out: by backlog, or by count without a database."""

from __future__ import annotations

from types import SimpleNamespace

import psycopg
from hypothesis import given
from hypothesis import strategies as st
from kafka import TopicPartition

from infra.services.ingest_workers import Coordinator, _seek_to_stored, split_by_backlog


def partitions(*backlogs: int) -> dict[TopicPartition, int]:
    return {TopicPartition("orders", number): n for number, n in enumerate(backlogs)}


def numbers(shares: list[list[TopicPartition]]) -> list[list[int]]:
    return [[partition.partition for partition in share] for share in shares]


def test_the_largest_backlog_goes_first_to_the_share_with_the_least() -> None:
    # Partition by number would give 0-3 and 4-7: 45,000 against 25,000 orders.
    backlogs = partitions(20_000, 5_000, 10_000, 10_000, 5_000, 5_000, 10_000, 5_000)

    shares = split_by_backlog(backlogs, 2)

    # 0; 2; 3 (10,000 < 20,000); 6 (a tie: the share with fewer partitions); 1; 4; 5; 7.
    assert numbers(shares) == [[0, 6, 5], [2, 3, 1, 4, 7]]
    assert [sum(backlogs[p] for p in share) for share in shares] == [35_000, 35_000]


def test_a_partition_number_goes_whole_to_one_worker_whatever_the_sites_topics() -> None:
    # A campaign's key is in partition 1 of both sites' topics: one worker applies it all.
    backlogs = {
        TopicPartition(topic, number): backlog
        for topic, row in (("orders.a", [9, 1, 4, 0]), ("orders.b", [0, 8, 1, 2]))
        for number, backlog in enumerate(row)
    }

    shares = split_by_backlog(backlogs, 2)

    assert [sorted((p.partition, p.topic) for p in share) for share in shares] == [
        [(0, "orders.a"), (0, "orders.b"), (2, "orders.a"), (2, "orders.b")],
        [(1, "orders.a"), (1, "orders.b"), (3, "orders.a"), (3, "orders.b")],
    ]
    assert [sum(backlogs[p] for p in share) for share in shares] == [14, 11]


def test_without_backlog_the_partitions_are_dealt_out_evenly() -> None:
    assert numbers(split_by_backlog(partitions(0, 0, 0, 0, 0), 2)) == [[0, 2, 4], [1, 3]]


def test_more_workers_than_partitions_leaves_some_idle() -> None:
    assert numbers(split_by_backlog(partitions(7, 3), 3)) == [[0], [1], []]


@given(st.lists(st.integers(0, 10**6), max_size=24), st.integers(1, 6))
def test_every_partition_is_in_exactly_one_share_and_no_share_could_give_one_away(
    waiting: list[int], workers: int
) -> None:
    backlogs = partitions(*waiting)

    shares = split_by_backlog(backlogs, workers)

    assert len(shares) == workers
    assert sorted(p for share in shares for p in share) == sorted(backlogs)
    loads = [sum(backlogs[p] for p in share) for share in shares]
    # Greedy by size: the fullest share exceeds the emptiest by at most its smallest part.
    fullest = loads.index(max(loads))
    smallest = min((backlogs[p] for p in shares[fullest]), default=0)
    assert max(loads) - min(loads) <= smallest


class FakeWorker:
    def __init__(self, name: str) -> None:
        self.process = SimpleNamespace(name=name)
        self.sent: list[tuple[object, ...]] = []

    def send(self, *message: object) -> None:
        self.sent.append(message)


def shared(worker: FakeWorker) -> list[int]:
    """The partitions of the one message a worker was sent, which must be an assignment."""
    [(kind, partitions)] = worker.sent
    assert kind == "assign"
    return [partition.partition for partition in partitions]  # type: ignore[attr-defined]


class DatabaseDown:
    def max_tracking_id(self, name: str) -> int | None:
        raise psycopg.OperationalError("connection refused")


class Positions:
    def __init__(self, stored: dict[str, int]) -> None:
        self.stored = stored

    def max_tracking_id(self, name: str) -> int | None:
        return self.stored.get(name)


def coordinator(app: object, workers: list[FakeWorker]) -> Coordinator:
    consumer = SimpleNamespace(pause=lambda *partitions: None)
    return Coordinator(consumer, app, workers)  # type: ignore[arg-type]


def test_an_assignment_is_shared_by_what_waits_after_the_stored_positions() -> None:
    workers = [FakeWorker("w0"), FakeWorker("w1")]
    sharing = coordinator(Positions({"orders:0": 8_999}), workers)
    sharing.bounds = {TopicPartition("orders", n): (0, 10_000) for n in range(3)}

    sharing.on_partitions_assigned([TopicPartition("orders", n) for n in range(3)])

    # Partition 0 has 1,000 left, 1 and 2 have 10,000 each.
    assert [shared(worker) for worker in workers] == [[1, 0], [2]]
    assert sharing.holding


def test_an_assignment_still_reaches_the_workers_when_the_database_cannot_say_what_waits() -> None:
    workers = [FakeWorker("w0"), FakeWorker("w1")]
    sharing = coordinator(DatabaseDown(), workers)
    sharing.bounds = {TopicPartition("orders", n): (0, 1_000) for n in range(4)}

    sharing.on_partitions_assigned([TopicPartition("orders", n) for n in range(4)])

    assert [shared(worker) for worker in workers] == [[0, 2], [1, 3]]


class Loop:
    def __init__(self, failures: int) -> None:
        self.failures, self.seeks = failures, 0

    def on_partitions_assigned(self, partitions: list[TopicPartition]) -> None:
        self.seeks += 1
        if self.failures:
            self.failures -= 1
            raise psycopg.OperationalError("connection refused")


def test_a_worker_that_cannot_read_its_stored_positions_keeps_its_partitions_to_try_again() -> None:
    partitions = [TopicPartition("orders", 3)]
    loop = Loop(failures=1)

    assert _seek_to_stored(loop, partitions) == partitions  # type: ignore[arg-type]
    assert _seek_to_stored(loop, partitions) == []  # type: ignore[arg-type]
    assert loop.seeks == 2
