"""`groupbuy replay`: read models rebuilt from zero, verified, and swapped in while in use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL

from consumers.projector import GENERATION, ProjectorSink
from domain.campaign import Campaign
from domain.outcomes import Order
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.replay.stored_events import StoredEvents
from infra.services.ingest import run_ingest
from infra.services.project import run_project
from infra.services.relay import run_relay
from infra.settings import Settings
from projections.read_models import ReadModelTables
from tests.support.builders import burst, campaign
from tests.support.kafka_io import (
    make_site_topics,
    publish_orders,
    read_until,
    results_topics,
    wait_for,
)
from tests.support.pipeline import groupbuy, running
from tests.support.read_models import (
    live_rows,
    projected_version,
    rebuilt_rows,
    stored_version,
    table_rows,
)


def replay(settings: Settings, *options: str) -> tuple[int, dict[str, Any]]:
    done = groupbuy(settings, "replay", "--json", *options)
    assert done.returncode in (0, 6), done.stderr
    return done.returncode, json.loads(done.stdout)


def rows_of(settings: Settings, schema: str) -> dict[str, list[Any]]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return table_rows(conn, ReadModelTables(schema))


def caught_up(settings: Settings, campaign_ids: list[str]) -> None:
    wait_for(
        lambda: projected_version(settings) == stored_version(settings, campaign_ids),
        timeout=60,
        what="the projector to catch up with the event store",
    )


@pytest.fixture
def campaign_ids(settings: Settings, unique: str) -> Iterator[list[str]]:
    """Four campaigns with every kind of event, projected live by the running services.

    Orders (some conditional, some cancelled again, some over the per-buyer limit), a
    deadline extended, a campaign called off, and one sold out.
    """
    ids = [f"rep{n}-{unique}" for n in range(4)]
    now = datetime.now(UTC)
    app = open_app(settings)
    for campaign_id in ids[:3]:
        app.open_campaign(campaign(campaign_id), now)
    app.open_campaign(campaign(ids[3], maximum_quantity=30, max_per_buyer=None), now)
    app.close()
    messages = burst(ids, 400)
    make_site_topics(settings)
    with running(run_ingest, settings), running(run_relay, settings):
        with running(run_project, settings):
            publish_orders(settings, messages)
            wait_for(
                lambda: stored_version(settings, ids) > len(messages),
                what="the orders stored",
            )
            app = open_app(settings)  # a fresh one: ingestion moved the campaigns on
            app.extend_deadline(ids[0], now + timedelta(days=3), datetime.now(UTC))
            app.cancel_campaign(ids[1], datetime.now(UTC))
            app.close()
            caught_up(settings, ids)
        yield ids


def test_a_replay_from_the_store_equals_the_live_read_models(
    settings: Settings, campaign_ids: list[str]
) -> None:
    code, outcome = replay(settings, "--verify")

    assert code == 0
    assert (outcome["differences"], outcome["campaigns_skipped"]) == ([], [])
    assert outcome["campaigns_compared"] == len(campaign_ids)
    assert outcome["events"] == stored_version(settings, campaign_ids)
    assert rows_of(settings, outcome["schema"]) == live_rows(settings)
    statuses = {row[0]: row[6] for row in live_rows(settings)["campaigns"]}
    assert sorted(statuses.values()) == ["cancelled", "open", "open", "succeeded"]


def test_a_replay_from_kafka_equals_the_live_read_models(
    settings: Settings, campaign_ids: list[str]
) -> None:
    code, outcome = replay(settings, "--source", "kafka", "--verify")

    assert code == 0
    assert (outcome["differences"], outcome["campaigns_skipped"]) == ([], [])
    assert outcome["events"] == stored_version(settings, campaign_ids)
    assert rows_of(settings, outcome["schema"]) == live_rows(settings)


def test_verify_lists_what_differs_and_swap_repairs_it_while_orders_flow(
    settings: Settings, campaign_ids: list[str]
) -> None:
    tables = ReadModelTables(settings.database_schema)
    wrong = campaign_ids[0]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            SQL("UPDATE {} SET buyers = 999 WHERE campaign_id = %s").format(tables.campaigns),
            (wrong,),
        )
    open_ids = [campaign_ids[0], campaign_ids[2]]

    code, verified = replay(settings, "--verify")

    assert code == 6
    assert len(verified["differences"]) == 2, verified["differences"]
    assert all(
        line.startswith("rm_campaigns: only ") and wrong in line for line in verified["differences"]
    )
    assert any(", 999, " in line for line in verified["differences"])

    more = [order for order in burst(open_ids, 300) if order["campaign_id"] in open_ids]
    more = [order | {"order_id": f"more:{order['order_id']}"} for order in more]
    with (
        running(run_ingest, settings),
        running(run_relay, settings),
        running(run_project, settings),
    ):
        publish_orders(settings, more[:150])
        code, swapped = replay(settings, "--swap")
        publish_orders(settings, more[150:])

        def all_answered(records: list[Any]) -> bool:
            later = sum(json.loads(r.value)["order_id"].startswith("more:") for r in records)
            return later >= len(more)

        results = read_until(settings, results_topics(settings), all_answered)
        assert all_answered(results), "not every later order was answered"
        caught_up(settings, campaign_ids)

    assert code == 0
    assert swapped["swapped"] is True
    live = live_rows(settings)
    assert live == rebuilt_rows(settings)
    assert 999 not in {row[10] for row in live["campaigns"]}
    assert any(row[1].startswith("more:") for row in live["commitments"])
    assert rows_of(settings, swapped["retired_schema"])["campaigns"]


def test_replay_names_a_missing_kafka_topic(settings: Settings) -> None:
    done = groupbuy(settings, "replay", "--source", "kafka")

    assert done.returncode == 1
    assert f"Kafka has no topic '{Topics(settings.topic_prefix).campaign_events}'" in done.stderr


def test_a_projector_fails_its_next_save_after_a_swap_until_it_rereads(settings: Settings) -> None:
    tables = ReadModelTables(settings.database_schema)
    sink = ProjectorSink(settings.database_url, tables)
    try:
        sink.stored_positions([])
        sink.process([], {})
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(
                SQL("UPDATE {} SET notification_id = 1 WHERE application_name = %s").format(
                    tables.positions
                ),
                (GENERATION,),
            )

        with pytest.raises(IntegrityError, match="no longer at 0"):
            sink.process([], {})
        sink.forget()
        sink.stored_positions([])
        sink.process([], {})
    finally:
        sink.close()


def test_a_stored_event_the_fast_reader_cannot_take_is_read_by_the_library_alike(
    settings: Settings, unique: str
) -> None:
    campaign_id = f"fallback-{unique}"
    order = Order("site-a:1", "site-a", "b-1", 2, Decimal("9.00"))
    app = open_app(settings)
    try:
        app.open_campaign(campaign(campaign_id), datetime.now(UTC))
        app.place_order(campaign_id, order, datetime.now(UTC))
        stored = app.recorder.select_events(Campaign.create_id(campaign_id))[-1]
        events = StoredEvents(app)
        events.know([campaign_id])
        where = (str(stored.originator_id), stored.originator_version, stored.topic)
        marked = json.loads(stored.state) | {"class_version": 2}  # as if from a later class

        fast = events.event(*where, stored.state)
        library = events.event(*where, json.dumps(marked).encode())
    finally:
        app.close()

    assert fast.type == "commitment.placed"
    assert fast.fields["max_unit_price"] == "9.00"
    assert library == fast


def test_replay_wants_at_least_one_worker(settings: Settings) -> None:
    done = groupbuy(settings, "replay", "--workers", "0")

    assert done.returncode == 2
    assert "--workers: must be above 0, got 0" in done.stderr
