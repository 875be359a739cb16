"""The read models equal a rebuild from zero, through crashes, redelivery and scale-out."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra.app import open_app
from infra.ingest_service import run_ingest
from infra.project_service import run_project
from infra.relay_service import run_relay
from infra.replay import replay_into, table_rows
from infra.settings import Settings
from infra.topics import Topics
from projections.read_models import ReadModelTables
from tests.integration.test_ingest import campaign, placed
from tests.integration.test_ingest import cancelled as cancellation
from tests.support.kafka_io import publish, read_json, wait_for
from tests.support.pipeline import ServiceProcess, running


@pytest.fixture
def campaign_ids(settings: Settings, unique: str) -> list[str]:
    ids = [f"proj{n}-{unique}" for n in range(3)]
    app = open_app(settings)
    for campaign_id in ids:
        app.open_campaign(campaign(campaign_id, max_per_buyer=None), datetime.now(UTC))
    app.close()
    return ids


def burst(campaign_ids: list[str], count: int) -> list[dict[str, Any]]:
    """Orders, some conditional, some cancelled again, over the campaigns."""
    rng = random.Random(3)
    messages: list[dict[str, Any]] = []
    for n in range(count):
        limit = rng.choice([None, None, "10.00", "8.00", "6.00"])
        order = placed(rng.choice(campaign_ids), n, quantity=rng.randint(1, 3))
        messages.append(order | ({"max_unit_price": limit} if limit else {}))
        if n % 7 == 0:
            messages.append(cancellation(order))
    return messages


def live_rows(settings: Settings) -> dict[str, list[Any]]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return table_rows(conn, ReadModelTables(settings.database_schema))


def rebuilt_rows(settings: Settings) -> dict[str, list[Any]]:
    tables = ReadModelTables(settings.database_schema, prefix="rebuilt_")
    replay_into(settings, tables, workers=2)  # as `groupbuy replay` does on two cores
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return table_rows(conn, tables)


def projected_version(settings: Settings) -> int:
    """The sum of versions the live model has applied, over all campaigns."""
    tables = ReadModelTables(settings.database_schema)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            row = conn.execute(
                psycopg.sql.SQL("SELECT coalesce(sum(version), 0) FROM {}").format(tables.campaigns)
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def stored_version(settings: Settings, campaign_ids: list[str]) -> int:
    app = open_app(settings)
    total = sum(app.get_campaign(c).version for c in campaign_ids)
    app.close()
    return total


def assert_read_models_equal_a_rebuild(
    settings: Settings, campaign_ids: list[str], messages: list[dict[str, Any]]
) -> None:
    # Every message answered means every event is stored; then the projector must catch up.
    results = read_json(settings, Topics(settings.topic_prefix).order_results, len(messages))
    assert len(results) >= len(messages), "not every order was answered"
    wait_for(
        lambda: projected_version(settings) == stored_version(settings, campaign_ids),
        timeout=60,
        what="the projector to catch up with the event store",
    )
    live, rebuilt = live_rows(settings), rebuilt_rows(settings)
    assert len(live["commitments"]) > 100
    assert live == rebuilt


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[None]:
    with running(run_ingest, settings), running(run_relay, settings):
        yield


def test_read_models_after_a_burst_equal_a_rebuild_from_zero(
    settings: Settings, campaign_ids: list[str], pipeline: None
) -> None:
    messages = burst(campaign_ids, 600)
    with running(run_project, settings):
        publish(settings, Topics(settings.topic_prefix).orders, messages)
        assert_read_models_equal_a_rebuild(settings, campaign_ids, messages)

    campaigns = {row[0]: row for row in live_rows(settings)["campaigns"]}
    assert set(campaigns) == set(campaign_ids)


def test_relay_killed_mid_stream_leaves_the_read_models_exact(
    settings: Settings, campaign_ids: list[str], processes: list[ServiceProcess], tmp_path: Path
) -> None:
    messages = burst(campaign_ids, 1500)
    with running(run_ingest, settings), running(run_project, settings):
        processes.append(ServiceProcess("relay", settings, tmp_path / "relay-1.log"))
        publish(settings, Topics(settings.topic_prefix).orders, messages[:800])
        wait_for(lambda: projected_version(settings) > 200, what="some projected events")
        processes[0].kill()
        publish(settings, Topics(settings.topic_prefix).orders, messages[800:])
        processes.append(ServiceProcess("relay", settings, tmp_path / "relay-2.log"))
        assert_read_models_equal_a_rebuild(settings, campaign_ids, messages)


def test_two_projectors_in_one_group_keep_the_read_models_exact(
    settings: Settings,
    campaign_ids: list[str],
    pipeline: None,
    processes: list[ServiceProcess],
    tmp_path: Path,
) -> None:
    messages = burst(campaign_ids, 1500)
    for n in range(2):
        processes.append(ServiceProcess("project", settings, tmp_path / f"project-{n}.log"))
    publish(settings, Topics(settings.topic_prefix).orders, messages)
    assert_read_models_equal_a_rebuild(settings, campaign_ids, messages)
