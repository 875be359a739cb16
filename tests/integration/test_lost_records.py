"""Records after a stored position that are gone from Kafka are never skipped silently.

A topic deleted and made again starts its offsets at 0, below what was applied; retention
may delete records before they were read. Ingestion says so and reads on (the new orders
are answered); the projector stops, naming the partition.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import TopicPartition

from consumers.loop import RecordsLostError
from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import Topics, partitions_from_env
from infra.services.clock import partition_for
from infra.services.ingest import run_ingest
from infra.services.project import run_project
from infra.services.relay import run_relay
from infra.settings import Settings
from tests.support.builders import campaign, placed
from tests.support.kafka_io import make_site_topics, publish, read_json, wait_for
from tests.support.pipeline import running
from tests.support.read_models import projected_version

FIRST, LATER = 5, 3
SITE = "site-a"  # every order here is one site's, so that offsets are in one partition


def make_again(settings: Settings, topic: str) -> None:
    """Delete `topic`, wait until the brokers forgot it, and create it again."""
    with kafka_clients.admin(settings) as admin:
        admin.delete_topics([topic])
        wait_for(lambda: topic not in admin.list_topics(), timeout=60, what=f"{topic} gone")
    for _ in range(30):  # the brokers may still be removing its partitions
        try:
            kafka_clients.ensure_topics(settings, [topic])
            return
        except RuntimeError:
            time.sleep(1)
    raise AssertionError(f"{topic} could not be made again")


def mine(campaign_id: str, numbers: range) -> list[dict[str, Any]]:
    return [placed(campaign_id, n, site_id=SITE) for n in numbers]


def open_one(settings: Settings, campaign_id: str) -> None:
    app = open_app(settings)
    app.open_campaign(campaign(campaign_id, max_per_buyer=None), datetime.now(UTC))
    app.close()


def test_orders_of_a_topic_made_again_are_answered_not_skipped(
    settings: Settings, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    topics = Topics(settings.topic_prefix)
    campaign_id = f"again-{unique}"
    open_one(settings, campaign_id)
    make_site_topics(settings, [SITE])
    with running(run_ingest, settings), running(run_relay, settings):
        publish(
            settings,
            topics.site_orders(SITE),
            mine(campaign_id, range(FIRST)),
        )
        read_json(settings, topics.site_results(SITE), FIRST)
    make_again(settings, topics.site_orders(SITE))

    later = mine(campaign_id, range(FIRST, FIRST + LATER))
    with (
        caplog.at_level(logging.ERROR, logger="consumers.loop"),
        running(run_ingest, settings),
        running(run_relay, settings),
    ):
        publish(settings, topics.site_orders(SITE), later)
        results = read_json(settings, topics.site_results(SITE), FIRST + LATER)

    answered = sorted(r["order_id"] for r in results[FIRST:])
    assert answered == sorted(o["order_id"] for o in later)
    assert {r["type"] for r in results} == {"order.accepted"}
    assert "deleted and made again" in caplog.text


def test_orders_deleted_before_they_were_read_are_named_and_the_rest_answered(
    settings: Settings, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    topics = Topics(settings.topic_prefix)
    campaign_id = f"trimmed-{unique}"
    open_one(settings, campaign_id)
    make_site_topics(settings, [SITE])
    with running(run_ingest, settings), running(run_relay, settings):
        publish(
            settings,
            topics.site_orders(SITE),
            mine(campaign_id, range(FIRST)),
        )
        read_json(settings, topics.site_results(SITE), FIRST)
    later = mine(campaign_id, range(FIRST, FIRST + LATER))
    publish(settings, topics.site_orders(SITE), later)
    partition = partition_for(campaign_id.encode(), partitions_from_env())
    with kafka_clients.admin(settings) as admin:  # as retention would, before ingest read them
        admin.delete_records(
            {TopicPartition(topics.site_orders(SITE), partition): FIRST + LATER - 1}
        )

    with (
        caplog.at_level(logging.ERROR, logger="consumers.loop"),
        running(run_ingest, settings),
        running(run_relay, settings),
    ):
        results = read_json(settings, topics.site_results(SITE), FIRST + 1)

    assert [r["order_id"] for r in results[FIRST:]] == [later[-1]["order_id"]]
    assert f"offsets {FIRST} to {FIRST + LATER - 2} were deleted" in caplog.text


def test_the_projector_stops_at_a_campaign_events_topic_made_again(
    settings: Settings, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    campaign_id = f"events-{unique}"
    open_one(settings, campaign_id)
    make_site_topics(settings, [SITE])
    with (
        running(run_ingest, settings),
        running(run_relay, settings),
        running(run_project, settings),
    ):
        publish(
            settings,
            topics.site_orders(SITE),
            mine(campaign_id, range(FIRST)),
        )
        read_json(settings, topics.site_results(SITE), FIRST)
        wait_for(lambda: projected_version(settings) == FIRST + 1, what="the events projected")
    make_again(settings, topics.campaign_events)

    stop = threading.Event()
    watchdog = threading.Timer(60, stop.set)
    watchdog.start()
    try:
        with pytest.raises(RecordsLostError, match="deleted and made again") as raised:
            run_project(settings, stop)
    finally:
        watchdog.cancel()
    assert topics.campaign_events in str(raised.value)
