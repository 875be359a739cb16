"""A campaign-events record the projector cannot apply stops it, loudly, just there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaProducer
from psycopg.sql import SQL

from consumers.batch import Record
from consumers.projector import ProjectorSink, UnappliableRecordError
from domain.campaign import Campaign
from domain.outcomes import Order
from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.replay.from_kafka import rebuild_from_kafka
from infra.settings import Settings
from projections.read_models import TABLES, ReadModelTables
from projections.wire import encode
from tests.support.builders import campaign
from tests.support.kafka_io import site_client
from tests.support.pipeline import ServiceProcess

TOPIC = "groupbuy.campaign-events.v1"


@pytest.fixture
def events(settings: Settings, unique: str) -> list[dict[str, Any]]:
    """A stored campaign's three events (opened, two commitments), as the relay sends them."""
    campaign_id = f"poison-{unique}"
    app = open_app(settings)
    now = datetime.now(UTC)
    app.open_campaign(campaign(campaign_id, max_per_buyer=None), now)
    app.place_order(campaign_id, Order("site-a:1", "site-a", "b-1", 2, None), now)
    app.place_order(campaign_id, Order("site-b:1", "site-b", "b-2", 3, None), now)
    stored = app.events.get(Campaign.create_id(campaign_id))
    messages = [json.loads(encode(event, campaign_id)) for event in stored]
    app.close()
    return messages


@pytest.fixture
def sink(settings: Settings) -> Iterator[ProjectorSink]:
    sink = ProjectorSink(settings.database_url, ReadModelTables(settings.database_schema))
    yield sink
    sink.close()


def send(settings: Settings, topic: str, messages: list[dict[str, Any]]) -> list[Any]:
    """Publish keyed by campaign_id, as the relay does; where each record went."""
    producer = KafkaProducer(**site_client(settings), acks="all")
    futures = [
        producer.send(topic, key=m["campaign_id"].encode(), value=json.dumps(m).encode())
        for m in messages
    ]
    producer.flush()
    producer.close()
    return [future.get(timeout=10) for future in futures]


def records(messages: list[dict[str, Any]]) -> list[Record]:
    """The messages as one partition's records, offsets from 0."""
    return [
        Record(TOPIC, 0, offset, 0, None, json.dumps(message).encode())
        for offset, message in enumerate(messages)
    ]


def live_version(settings: Settings, campaign_id: str) -> int | None:
    tables = ReadModelTables(settings.database_schema)
    with psycopg.connect(settings.database_url) as conn:
        query = SQL("SELECT version FROM {} WHERE campaign_id = %s").format(tables.campaigns)
        row = conn.execute(query, (campaign_id,)).fetchone()
    return None if row is None else int(row[0])


def test_groupbuy_project_stops_at_a_forged_record_naming_where_it_is(
    settings: Settings, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    topic = Topics(settings.topic_prefix).campaign_events
    kafka_clients.ensure_topics(settings, [topic])
    campaign_id = events[0]["campaign_id"]
    forged = {
        "type": "commitment.placed",
        "campaign_id": campaign_id,
        "version": 4,
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    *_, where = send(settings, topic, [*events, forged])

    project = ServiceProcess("project", settings, tmp_path / "project.log")
    code = project.process.wait(timeout=20)

    log = (tmp_path / "project.log").read_text()
    assert code != 0, log
    assert f"{topic}:{where.partition} offset {where.offset}" in log
    assert "commitment.placed without order_id" in log
    assert live_version(settings, campaign_id) == 3  # the three before it were applied


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": 5}, "jumps from v3 to v5"),
        ({"type": "commitment.teleported"}, "unknown event type"),
        ({"quantity": 2**63}, "quantity the read models cannot hold"),
        ({"buyer_id": "b\x00"}, "buyer_id the read models cannot hold"),
        ({"unit_price": "1e999999"}, "unit_price the read models cannot hold"),
        ({"order_id": "site-a:1"}, "the database refused it"),  # a second row for one order
    ],
)
def test_a_record_the_projector_cannot_apply_is_named_after_saving_those_before_it(
    settings: Settings,
    events: list[dict[str, Any]],
    sink: ProjectorSink,
    change: dict[str, Any],
    reason: str,
) -> None:
    forged = events[1] | {"version": 4, "order_id": "site-c:9"} | change
    batch = records([*events, forged, events[2] | {"version": 5}])

    with pytest.raises(UnappliableRecordError) as raised:
        sink.process(batch, {f"{TOPIC}:0": None})

    assert f"{TOPIC}:0 offset 3: " in str(raised.value)
    assert reason in str(raised.value)
    assert live_version(settings, events[0]["campaign_id"]) == 3
    assert sink.stored_positions([f"{TOPIC}:0"]) == {f"{TOPIC}:0": 2}


def test_a_replay_from_kafka_stops_where_the_projector_stops(
    settings: Settings, events: list[dict[str, Any]]
) -> None:
    topic = Topics(settings.topic_prefix).campaign_events
    kafka_clients.ensure_topics(settings, [topic])
    *_, where = send(settings, topic, [*events, events[2] | {"version": 7}])
    rebuilt = ReadModelTables(settings.database_schema, prefix="rebuilt_")

    with (
        psycopg.connect(settings.database_url) as conn,
        pytest.raises(UnappliableRecordError) as raised,
    ):
        rebuild_from_kafka(settings, topic, conn, rebuilt, lambda *_: None)

    assert f"{topic}:{where.partition} offset {where.offset}: " in str(raised.value)
    assert "jumps from v3 to v7" in str(raised.value)


def test_a_redelivered_event_is_skipped_silently(
    settings: Settings, events: list[dict[str, Any]], sink: ProjectorSink
) -> None:
    sink.process(records([*events, events[1], events[2]]), {f"{TOPIC}:0": None})

    assert live_version(settings, events[0]["campaign_id"]) == 3


def test_the_projector_widens_the_int_columns_of_older_tables_to_bigint(
    settings: Settings, events: list[dict[str, Any]]
) -> None:
    tables = ReadModelTables(settings.database_schema)
    older = TABLES.replace(" bigint", " int").replace(
        "notification_id int", "notification_id bigint"
    )
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(SQL(older).format(**names(tables)))

    first = ProjectorSink(settings.database_url, tables)
    past_int4 = events[1] | {"quantity": 3_000_000_000, "committed_quantity": 3_000_000_002}
    first.process(records([events[0], past_int4]), {f"{TOPIC}:0": None})
    first.close()
    second = ProjectorSink(settings.database_url, tables)
    with second.conn.cursor() as cur:
        widened_again = tables.widen(cur)
    second.close()

    assert column_types(settings) == {"bigint"}
    assert widened_again == []
    with psycopg.connect(settings.database_url) as conn:
        query = SQL("SELECT committed_quantity FROM {}").format(tables.campaigns)
        assert conn.execute(query).fetchall() == [(3_000_000_002,)]


def names(tables: ReadModelTables) -> dict[str, Any]:
    return {
        "campaigns": tables.campaigns,
        "sites": tables.sites,
        "prices": tables.prices,
        "commitments": tables.commitments,
        "positions": tables.positions,
    }


def column_types(settings: Settings) -> set[str]:
    """The types of the read models' whole-number columns."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema = %s "
            "AND starts_with(table_name, 'rm_') AND data_type IN ('integer', 'bigint')",
            (settings.database_schema,),
        ).fetchall()
    return {row[0] for row in rows}
