"""Which orders partition the clock waits on for a campaign, and when it counts as caught up."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka import TopicPartition
from kafka.partitioner import DefaultPartitioner

from infra.services.clock import (
    Progress,
    Scan,
    applied_through,
    millis,
    partition_for,
    ready_campaigns,
)

DEADLINE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
D = millis(DEADLINE)
LATER = DEADLINE + timedelta(minutes=1)


def cluster(partitions: int) -> SimpleNamespace:
    """The three metadata questions kafka-python's partitioner asks, answered."""
    return SimpleNamespace(
        topics=lambda: {"orders"},
        partitions_for_topic=lambda _: set(range(partitions)),
        available_partitions_for_topic=lambda _: set(range(partitions)),
    )


@pytest.mark.parametrize(
    ("key", "partition"),
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_a_key_goes_to_the_partition_the_java_client_gives_it(key: bytes, partition: int) -> None:
    # The figures kafka-python's own tests hold against the Java client's, on 1,000 partitions.
    assert partition_for(key, 1000) == partition


@given(st.from_regex(r"[a-z0-9][a-z0-9-]{0,63}", fullmatch=True), st.integers(1, 64))
def test_a_campaign_goes_to_the_partition_kafka_pythons_producer_gives_it(
    campaign_id: str, partitions: int
) -> None:
    key = campaign_id.encode()
    chosen = DefaultPartitioner().partition("orders", key, key, b"", b"", cluster(partitions))

    assert partition_for(key, partitions) == chosen


def test_a_deadline_counts_in_whole_milliseconds_rounded_up() -> None:
    assert millis(DEADLINE) == int(DEADLINE.timestamp()) * 1000
    assert millis(DEADLINE + timedelta(microseconds=1)) == millis(DEADLINE) + 1
    assert millis(DEADLINE - timedelta(microseconds=1)) == millis(DEADLINE)


def test_a_partition_applied_to_its_end_is_through_every_due_deadline() -> None:
    assert applied_through(Progress(stored=9, end=10, first_late=None)) == math.inf
    assert applied_through(Progress(stored=None, end=0, first_late=None)) == math.inf


def test_a_partition_with_unapplied_records_and_nothing_after_the_deadline_is_not_through() -> None:
    # Offsets 5 to 9 may be orders appended before the deadline: only reading tells.
    assert applied_through(Progress(stored=4, end=10, first_late=None)) == -math.inf
    assert applied_through(Progress(stored=None, end=3, first_late=None)) == -math.inf


def test_applying_everything_before_the_first_late_record_is_through_its_time() -> None:
    progress = Progress(stored=6, end=10, first_late=(7, D + 500))

    assert applied_through(progress) == D + 500


def test_stopping_short_of_the_first_late_record_is_not_through() -> None:
    progress = Progress(stored=5, end=10, first_late=(7, D + 500))

    assert applied_through(progress) == -math.inf


def test_transaction_markers_after_the_stored_position_do_not_hold_the_partition_back() -> None:
    # Ingestion applied offset 0; 1 is a commit marker, 2 an aborted order, 3 its marker.
    read = Scan(stored=0, checked_to=4)

    assert applied_through(Progress(stored=0, end=4, first_late=None, scan=read)) == math.inf


def test_an_unapplied_order_found_by_reading_holds_back_only_deadlines_after_it() -> None:
    read = Scan(stored=0, checked_to=2, first=(2, D - 1000))
    progress = Progress(stored=0, end=4, first_late=None, scan=read)

    assert applied_through(progress) == D - 1000


def test_a_read_stopped_by_an_open_transaction_is_not_through() -> None:
    # The transaction from offset 3 on may still commit orders appended before the deadline.
    read = Scan(stored=0, checked_to=3)

    assert applied_through(Progress(stored=0, end=6, first_late=None, scan=read)) == -math.inf


def test_a_stalled_partition_holds_back_only_the_campaigns_whose_key_it_carries() -> None:
    stalled, caught_up = TopicPartition("orders", 3), TopicPartition("orders", 5)
    due = [("on-3", DEADLINE), ("on-5", DEADLINE), ("also-on-5", DEADLINE)]
    carriers = {"on-3": [stalled], "on-5": [caught_up], "also-on-5": [caught_up]}
    through = {stalled: -math.inf, caught_up: math.inf}

    assert ready_campaigns(due, carriers, through) == ["on-5", "also-on-5"]


def test_a_campaign_waits_for_its_partition_in_every_orders_topic() -> None:
    site_a, site_b = TopicPartition("orders.a", 1), TopicPartition("orders.b", 6)
    due = [("laptop", DEADLINE)]
    carriers = {"laptop": [site_a, site_b]}

    assert ready_campaigns(due, carriers, {site_a: math.inf, site_b: D - 1}) == []
    assert ready_campaigns(due, carriers, {site_a: math.inf, site_b: D}) == ["laptop"]


def test_a_partition_through_one_deadline_holds_back_a_later_one() -> None:
    partition = TopicPartition("orders", 0)
    due = [("early", DEADLINE), ("late", LATER)]
    carriers = {"early": [partition], "late": [partition]}

    assert ready_campaigns(due, carriers, {partition: D + 500}) == ["early"]
