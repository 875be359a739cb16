"""What `/readyz` says of a consumer service, and the lag and held-campaign gauges it sets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kafka import TopicPartition
from prometheus_client import REGISTRY

from infra.adapters import metrics
from infra.adapters.metrics import ConsumerHealth
from infra.services.clock import Held, HeldLog, Progress

A0, A1 = TopicPartition("orders.a", 0), TopicPartition("orders.a", 1)


@pytest.fixture(autouse=True)
def clean_gauges() -> Iterator[None]:
    yield
    metrics.CONSUMER_LAG.clear()
    metrics.CAMPAIGN_HELD.clear()


def lag(service: str, partition: TopicPartition) -> float | None:
    labels = {"service": service, "topic": partition.topic, "partition": str(partition.partition)}
    return REGISTRY.get_sample_value("groupbuy_consumer_lag", labels)


def test_a_consumer_is_ready_once_assigned_and_while_within_the_bound() -> None:
    health = ConsumerHealth("project", max_lag=100)
    assert health.why_not() == "project: no partitions assigned yet"

    health.report({A0: 0, A1: 100})
    assert health.why_not() is None
    assert (lag("project", A0), lag("project", A1)) == (0, 100)

    health.report({A0: 3, A1: 101})
    assert health.why_not() == "project: 101 records behind on orders.a:1 (more than 100)"

    health.report({})  # its partitions went to another member: nothing to do
    assert health.why_not() is None
    assert (lag("project", A0), lag("project", A1)) == (None, None)  # no stale gauges


def test_only_a_partition_no_longer_reported_loses_its_gauge() -> None:
    health = ConsumerHealth("settle", max_lag=10)
    health.report({A0: 4, A1: 5})
    health.report({A1: 0})
    assert (lag("settle", A0), lag("settle", A1)) == (None, 0)


def test_the_clock_reports_each_held_campaign_with_its_partition_until_released() -> None:
    log = HeldLog()
    past = datetime.now(UTC) - timedelta(seconds=30)
    held = {A1: Held(["laptop-x1", "phone-2"], Progress(4, 9, None))}
    log.note(held, {"laptop-x1": past, "phone-2": past + timedelta(seconds=20)})

    def seconds(campaign: str) -> float | None:
        labels = {"campaign": campaign, "topic": "orders.a", "partition": "1"}
        return REGISTRY.get_sample_value("groupbuy_campaign_held_seconds", labels)

    first, second = seconds("laptop-x1"), seconds("phone-2")
    assert first is not None
    assert second is not None
    assert 30 <= first < 40
    assert 10 <= second < 20

    log.note({}, {})
    assert seconds("laptop-x1") is None
    assert seconds("phone-2") is None
