"""The clock closes a campaign once the partition carrying its key is in, by the broker's time."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaAdminClient, TopicPartition

from domain.application import GroupBuying
from domain.campaign import Campaign
from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import Topics, partitions_from_env
from infra.services import clock
from infra.services.clock import partition_for, run_clock
from infra.services.ingest import run_ingest
from infra.settings import Settings
from tests.support.builders import campaign, placed
from tests.support.kafka_io import make_site_topics, publish, read_until, wait_for
from tests.support.pipeline import running

SITE = "site-a"  # the site whose orders these tests send, unless they say otherwise


def mine(campaign_id: str, n: int) -> dict[str, object]:
    """An order of SITE's, for its own topic."""
    return placed(campaign_id, n, site_id=SITE)


@pytest.fixture
def app(settings: Settings) -> Iterator[GroupBuying]:
    make_site_topics(settings)
    application = open_app(settings)
    yield application
    application.close()


@pytest.fixture
def clock_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=clock.__name__)
    return caplog


def open_until(app: GroupBuying, campaign_id: str, seconds: float) -> datetime:
    deadline = datetime.now(UTC) + timedelta(seconds=seconds)
    definition = campaign(campaign_id, max_per_buyer=None, deadline=deadline.isoformat())
    app.open_campaign(definition, datetime.now(UTC))
    return deadline


def on_distinct_partitions(prefix: str, count: int) -> list[str]:
    """Campaign ids whose orders go to `count` different partitions of the orders topic."""
    partitions = partitions_from_env()
    if partitions < count:
        pytest.skip(f"needs {count} partitions, GROUPBUY_TOPIC_PARTITIONS gives {partitions}")
    chosen: dict[int, str] = {}
    for n in itertools.count():
        campaign_id = f"{prefix}-{n}"
        chosen.setdefault(partition_for(campaign_id.encode(), partitions), campaign_id)
        if len(chosen) == count:
            return list(chosen.values())
    raise AssertionError("unreachable")


def partition_of(campaign_id: str) -> int:
    return partition_for(campaign_id.encode(), partitions_from_env())


def events(app: GroupBuying, campaign_id: str) -> list[object]:
    return list(app.events.get(Campaign.create_id(campaign_id)))


def count(app: GroupBuying, campaign_id: str, kind: type) -> int:
    return sum(isinstance(event, kind) for event in events(app, campaign_id))


def closed(app: GroupBuying, campaign_id: str) -> bool:
    return count(app, campaign_id, Campaign.Closed) > 0


def logged(caplog: pytest.LogCaptureFixture, level: int, *words: str) -> bool:
    return any(
        r.levelno == level and all(w in r.getMessage() for w in words) for r in caplog.records
    )


def test_orders_of_a_campaign_go_to_the_partition_the_clock_waits_on(
    settings: Settings, app: GroupBuying, unique: str
) -> None:
    orders_topic = Topics(settings.topic_prefix).site_orders(SITE)
    campaign_ids = [f"key-{unique}-{n}" for n in range(40)]

    publish(settings, orders_topic, [mine(campaign_id, 0) for campaign_id in campaign_ids])
    records = read_until(settings, orders_topic, lambda rs: len(rs) >= len(campaign_ids), 30)

    assert {r.key.decode(): r.partition for r in records} == {
        campaign_id: partition_of(campaign_id) for campaign_id in campaign_ids
    }


def test_a_partition_ingestion_has_not_caught_up_holds_back_only_its_campaigns(
    settings: Settings,
    app: GroupBuying,
    unique: str,
    clock_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clock, "HELD_WARNING_AFTER", 1.0)
    orders_topic = Topics(settings.topic_prefix).site_orders(SITE)
    stalled, moving = on_distinct_partitions(f"held-{unique}", 2)
    deadline = open_until(app, stalled, 6)
    open_until(app, moving, 6)
    with running(run_ingest, settings):
        publish(settings, orders_topic, [mine(moving, 1)])
        wait_for(lambda: count(app, moving, Campaign.CommitmentPlaced) == 1, 10, "the order")
    # Ingestion has stopped: this order, appended before the deadline, waits in its partition.
    publish(settings, orders_topic, [mine(stalled, 1)])
    assert datetime.now(UTC) < deadline, "the test was too slow to publish before the deadline"

    with running(run_clock, settings):
        wait_for(lambda: closed(app, moving), 15, "the caught-up campaign to close")
        held = f"{orders_topic}:{partition_of(stalled)}"
        wait_for(lambda: logged(clock_log, logging.WARNING, stalled, held), 10, "a warning")
        assert not closed(app, stalled)
        with running(run_ingest, settings):
            wait_for(lambda: closed(app, stalled), 15, "the held campaign to close")

    assert count(app, stalled, Campaign.CommitmentPlaced) == 1  # applied late, yet accepted
    assert logged(clock_log, logging.INFO, held, "no longer holds back")


def test_transaction_markers_on_a_quiet_partition_do_not_hold_a_campaign_back(
    settings: Settings, app: GroupBuying, unique: str
) -> None:
    orders_topic = Topics(settings.topic_prefix).site_orders(SITE)
    campaign_id = f"txn-{unique}"
    deadline = open_until(app, campaign_id, 4)
    for n, commit in ((1, True), (2, False)):
        producer = kafka_clients.transactional_producer(settings, f"test-{unique}-{n}")
        producer.init_transactions()
        producer.begin_transaction()
        message = json.dumps(mine(campaign_id, n)).encode()
        producer.send(orders_topic, key=campaign_id.encode(), value=message)
        producer.flush()
        if commit:
            producer.commit_transaction()
        else:
            producer.abort_transaction()
        producer.close()

    with running(run_ingest, settings), running(run_clock, settings):
        wait_for(lambda: closed(app, campaign_id), 30, "the campaign to close")
        closed_after = datetime.now(UTC) - deadline

    assert closed_after < timedelta(seconds=3)
    assert count(app, campaign_id, Campaign.CommitmentPlaced) == 1  # the committed order only


def test_an_open_transaction_holds_its_campaign_back_until_it_commits(
    settings: Settings, app: GroupBuying, unique: str
) -> None:
    orders_topic = Topics(settings.topic_prefix).site_orders(SITE)
    campaign_id = f"open-txn-{unique}"
    deadline = open_until(app, campaign_id, 3)
    producer = kafka_clients.transactional_producer(settings, f"test-{unique}")
    producer.init_transactions()
    producer.begin_transaction()
    message = json.dumps(mine(campaign_id, 1)).encode()
    producer.send(orders_topic, key=campaign_id.encode(), value=message)
    producer.flush()  # appended before the deadline, committed after it

    with running(run_ingest, settings), running(run_clock, settings):
        wait_for(lambda: datetime.now(UTC) > deadline + timedelta(seconds=2), 10, "a moment")
        assert not closed(app, campaign_id)
        producer.commit_transaction()
        wait_for(lambda: closed(app, campaign_id), 15, "the campaign to close")
    producer.close()

    assert count(app, campaign_id, Campaign.CommitmentPlaced) == 1


def test_a_clock_whose_host_runs_ahead_waits_for_the_brokers_time(
    settings: Settings, app: GroupBuying, unique: str
) -> None:
    orders_topic = Topics(settings.topic_prefix).site_orders(SITE)
    campaign_id = f"skew-{unique}"
    deadline = open_until(app, campaign_id, 5)

    def ahead() -> datetime:
        return datetime.now(UTC) + timedelta(minutes=1)

    def run_clock_ahead(settings: Settings, stop: threading.Event) -> None:
        run_clock(settings, stop, now=ahead)

    with running(run_ingest, settings), running(run_clock_ahead, settings):
        # By its host's time the deadline passed a minute ago; by the broker's, not yet.
        wait_for(lambda: datetime.now(UTC) > deadline - timedelta(seconds=1.5), 10, "a moment")
        publish(settings, orders_topic, [mine(campaign_id, 1)])
        wait_for(lambda: len(events(app, campaign_id)) > 1, 10, "the order to be applied")
        wait_for(lambda: closed(app, campaign_id), 15, "the campaign to close")

    assert count(app, campaign_id, Campaign.CommitmentPlaced) == 1  # not campaign_closed
    (close,) = [e for e in events(app, campaign_id) if isinstance(e, Campaign.Closed)]
    assert close.timestamp >= deadline


def test_a_site_registered_while_the_clock_runs_holds_back_its_campaigns_too(
    settings: Settings, app: GroupBuying, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    campaign_id = f"newcomer-{unique}"
    newcomer = f"late-{unique}"
    deadline = open_until(app, campaign_id, 4)

    with running(run_clock, settings):
        # A new site's topic and a timely order on it, while no ingestion runs.
        make_site_topics(settings, [newcomer])
        order = placed(campaign_id, 1, site_id=newcomer)
        publish(settings, topics.site_orders(newcomer), [order])
        wait_for(lambda: datetime.now(UTC) > deadline + timedelta(seconds=2), 10, "a moment")
        assert not closed(app, campaign_id)
        with running(run_ingest, settings):
            wait_for(lambda: closed(app, campaign_id), 20, "the campaign to close")

    assert count(app, campaign_id, Campaign.CommitmentPlaced) == 1  # applied late, yet accepted


def test_a_sites_topic_kafka_cannot_describe_closes_nothing_and_says_so(
    settings: Settings, app: GroupBuying, unique: str, clock_log: pytest.LogCaptureFixture
) -> None:
    # Listed, then gone (deleted) by the time the clock asks for its partitions.
    ghost = Topics(settings.topic_prefix).site_orders(f"ghost-{unique}")
    campaign_id = f"ghost-{unique}"
    deadline = open_until(app, campaign_id, 60)  # taken as due: ready() is told so
    offsets = kafka_clients.reader(settings, isolation_level="read_uncommitted")
    reader = kafka_clients.reader(settings)
    try:
        progress = clock.IngestProgress(
            app, offsets, lambda: [ghost], clock.PartitionReader(reader)
        )
        assert progress.ready([(campaign_id, deadline)]) == []
    finally:
        offsets.close()
        reader.close()

    assert logged(clock_log, logging.ERROR, ghost, "no campaign closes at its deadline")


def test_orders_deleted_before_ingestion_applied_them_no_longer_hold_a_campaign_back(
    settings: Settings,
    app: GroupBuying,
    unique: str,
    kafka_admin: KafkaAdminClient,
    clock_log: pytest.LogCaptureFixture,
) -> None:
    orders_topic = Topics(settings.topic_prefix).site_orders(SITE)
    campaign_id = f"trimmed-{unique}"
    open_until(app, campaign_id, 2)
    partition = TopicPartition(orders_topic, partition_of(campaign_id))
    publish(settings, orders_topic, [mine(campaign_id, n) for n in range(2)])
    kafka_admin.delete_records({partition: 2})

    with running(run_clock, settings):  # ingestion never ran
        wait_for(lambda: closed(app, campaign_id), 15, "the campaign to close")

    lost = f"{orders_topic}:{partition.partition}: offsets 0 to 1 were deleted"
    assert logged(clock_log, logging.WARNING, lost)


def test_a_clock_topic_that_keeps_the_producers_time_stops_the_clock_saying_why(
    settings: Settings, app: GroupBuying, unique: str, kafka_admin: KafkaAdminClient
) -> None:
    clock_topic = Topics(settings.topic_prefix).clock
    kept = {"message.timestamp.type": "CreateTime"}
    kafka_admin.create_topics(
        {clock_topic: {"num_partitions": 1, "replication_factor": -1, "configs": kept}}
    )
    open_until(app, f"create-time-{unique}", 1)
    stop = threading.Event()
    timer = threading.Timer(20, stop.set)  # stops a clock that would not stop by itself
    timer.start()

    with pytest.raises(RuntimeError, match=f"{clock_topic} keeps the producers' timestamps"):
        run_clock(settings, stop)
    timer.cancel()
