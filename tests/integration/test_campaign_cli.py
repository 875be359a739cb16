"""`groupbuy campaign show|list` read the live read model, for people and for scripts."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from domain.outcomes import Order
from infra.adapters.app import open_app
from infra.settings import Settings
from projections.read_models import ReadModelTables
from tests.support.builders import campaign, order
from tests.support.kafka_io import publish_orders, wait_for
from tests.support.pipeline import GROUPBUY, child_env, groupbuy, order_pipeline
from tests.support.read_models import projected_version, replay_into


@pytest.fixture
def campaign_id(settings: Settings, unique: str) -> str:
    """A campaign with 21 units from two sites, projected into the live read model."""
    campaign_id = f"cli-{unique}"
    app = open_app(settings)
    now = datetime.now(UTC)
    app.open_campaign(campaign(campaign_id, max_per_buyer=None), now)
    app.place_order(campaign_id, Order("site-a:1", "site-a", "b-1", 15, None), now)
    app.place_order(campaign_id, Order("site-b:1", "site-b", "b-2", 6, None), now)
    app.close()
    replay_into(settings, ReadModelTables(settings.database_schema))
    return campaign_id


def test_show_prints_the_live_figures_as_json(settings: Settings, campaign_id: str) -> None:
    done = groupbuy(settings, "campaign", "show", campaign_id, "--json")

    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert (view["status"], view["unit_price"], view["committed_quantity"]) == ("open", "8.00", 21)
    assert (view["buyers"], view["next_unit_price"], view["units_to_next_price"]) == (2, "6.00", 39)
    assert view["sites"] == [
        {"site_id": "site-a", "quantity": 15},
        {"site_id": "site-b", "quantity": 6},
    ]


def test_show_prints_a_readable_table(settings: Settings, campaign_id: str) -> None:
    done = groupbuy(settings, "campaign", "show", campaign_id)

    assert done.returncode == 0, done.stderr
    assert campaign_id in done.stdout
    assert "unit price" in done.stdout
    assert "8.00" in done.stdout
    assert "site site-a" in done.stdout


def test_list_includes_the_campaign_and_filters_by_status(
    settings: Settings, campaign_id: str
) -> None:
    listed = json.loads(groupbuy(settings, "campaign", "list", "--json").stdout)
    closed = json.loads(
        groupbuy(settings, "campaign", "list", "--status", "failed", "--json").stdout
    )

    assert [row["campaign_id"] for row in listed] == [campaign_id]
    assert closed == []


def test_an_unknown_campaign_is_a_clear_error(settings: Settings, campaign_id: str) -> None:
    done = groupbuy(settings, "campaign", "show", "no-such-campaign")

    assert done.returncode == 4
    assert "no campaign 'no-such-campaign' in the read model" in done.stderr


def test_an_unreachable_database_is_named_with_its_address(settings: Settings) -> None:
    nowhere = replace(settings, database_url="postgresql://u:secret@127.0.0.1:9/groupbuy")

    done = groupbuy(nowhere, "campaign", "list")

    assert done.returncode == 3
    assert "cannot reach PostgreSQL at 127.0.0.1:9/groupbuy" in done.stderr
    assert "secret" not in done.stderr


def test_watch_prints_each_change_as_the_projector_commits_it_until_the_close(
    settings: Settings, unique: str
) -> None:
    campaign_id = f"watch-{unique}"
    with order_pipeline(settings, campaign(campaign_id, max_per_buyer=None)):
        wait_for(lambda: projected_version(settings) == 1, what="the opening projected")
        watching = subprocess.Popen(
            [GROUPBUY, "campaign", "watch", campaign_id, "--json"],
            env=child_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watching.stdout is not None
            first = json.loads(watching.stdout.readline())
            publish_orders(settings, [order(campaign_id, "site-a", "b1", 12, None)])
            pushed = json.loads(watching.stdout.readline())
            app = open_app(settings)
            app.cancel_campaign(campaign_id, datetime.now(UTC))
            app.close()
            last = [json.loads(line) for line in watching.stdout]  # to its end: it exits
            assert watching.wait(timeout=30) == 0, watching.stderr.read() if watching.stderr else ""
        finally:
            if watching.poll() is None:
                watching.kill()
    assert (first["version"], first["committed_quantity"]) == (1, 0)
    assert (pushed["version"], pushed["committed_quantity"], pushed["unit_price"]) == (
        2,
        12,
        "10.00",
    )
    assert (last[-1]["status"], last[-1]["committed_quantity"]) == ("cancelled", 12)


def test_watch_names_a_campaign_it_cannot_find(settings: Settings, unique: str) -> None:
    replay_into(settings, ReadModelTables(settings.database_schema))  # the tables, empty
    done = groupbuy(settings, "campaign", "watch", f"none-{unique}")

    assert done.returncode != 0
    assert f"no campaign 'none-{unique}'" in done.stderr
