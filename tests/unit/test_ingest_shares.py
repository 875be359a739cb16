"""How `groupbuy ingest --workers N` shares its partitions out: by the orders waiting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kafka import TopicPartition

from infra.ingest_workers import split_by_backlog


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
