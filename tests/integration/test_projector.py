"""The read models equal a rebuild from zero, through crashes, redelivery and scale-out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.adapters.app import open_app
from infra.services.ingest import run_ingest
from infra.services.project import run_project
from infra.services.relay import run_relay
from infra.settings import Settings
from tests.support.builders import burst, campaign
from tests.support.kafka_io import (
    make_site_topics,
    publish_orders,
    read_json,
    results_topics,
    wait_for,
)
from tests.support.pipeline import ServiceProcess, running
from tests.support.read_models import (
    live_rows,
    projected_version,
    rebuilt_rows,
    stored_version,
)


@pytest.fixture
def campaign_ids(settings: Settings, unique: str) -> list[str]:
    make_site_topics(settings)
    ids = [f"proj{n}-{unique}" for n in range(3)]
    app = open_app(settings)
    for campaign_id in ids:
        app.open_campaign(campaign(campaign_id, max_per_buyer=None), datetime.now(UTC))
    app.close()
    return ids


def assert_read_models_equal_a_rebuild(
    settings: Settings, campaign_ids: list[str], messages: list[dict[str, Any]]
) -> None:
    # Every message answered means every event is stored; then the projector must catch up.
    results = read_json(settings, results_topics(settings), len(messages))
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
        publish_orders(settings, messages)
        assert_read_models_equal_a_rebuild(settings, campaign_ids, messages)

    campaigns = {row[0]: row for row in live_rows(settings)["campaigns"]}
    assert set(campaigns) == set(campaign_ids)


def test_relay_killed_mid_stream_leaves_the_read_models_exact(
    settings: Settings, campaign_ids: list[str], processes: list[ServiceProcess], tmp_path: Path
) -> None:
    messages = burst(campaign_ids, 1500)
    with running(run_ingest, settings), running(run_project, settings):
        processes.append(ServiceProcess("relay", settings, tmp_path / "relay-1.log"))
        publish_orders(settings, messages[:800])
        wait_for(lambda: projected_version(settings) > 200, what="some projected events")
        processes[0].kill()
        publish_orders(settings, messages[800:])
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
    publish_orders(settings, messages)
    assert_read_models_equal_a_rebuild(settings, campaign_ids, messages)
