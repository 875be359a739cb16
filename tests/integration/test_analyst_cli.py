"""`groupbuy history|whatif|demand|export` on a history made by the real pipeline."""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.sql import SQL, Identifier

from domain.campaign import Campaign
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.services.clock import run_clock
from infra.services.ingest import run_ingest
from infra.services.project import run_project
from infra.services.relay import run_relay
from infra.services.settle import run_settle
from infra.settings import Settings
from projections import queries
from projections.read_models import ReadModelTables
from tests.support.builders import campaign, cancelled, order
from tests.support.kafka_io import make_site_topics, publish_orders, read_json, wait_for
from tests.support.pipeline import groupbuy, running
from tests.support.services import Services

# Live prices: 10.00 from 1 unit, 8.00 from 20, 6.00 from 60 (floor 6.00, minimum 10).
WAVES: list[list[tuple[str, str, int, str | None]]] = [
    [("site-a", "b1", 12, None), ("site-b", "b2", 5, "9.00")],  # 17 units, 10.00
    [("site-c", "b3", 10, "8.00")],  # 27 units, 8.00
    [("site-a", "b4", 40, "6.00")],  # 67 units, 6.00; then b2 withdraws: 62 units
]
CHEAPER_SOONER = {
    "kind": "tiers",
    "tiers": [
        {"min_quantity": 1, "unit_price": "10.00"},
        {"min_quantity": 20, "unit_price": "7.00"},
    ],
}


@dataclass
class Story:
    """A campaign run through ingest, relay, projector, clock and settle, and what was seen."""

    settings: Settings
    campaign_id: str
    snapshots: list[dict[str, Any]]  # the live read model's row after each wave, and at the end
    prices: list[tuple[int, datetime, Decimal, int]]  # price_history: version, at, price, qty
    purchase_order: dict[str, Any]
    event_count: int


def read_model_row(settings: Settings, campaign_id: str) -> dict[str, Any] | None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            return queries.campaign(conn, ReadModelTables(settings.database_schema), campaign_id)
        except psycopg.errors.UndefinedTable:
            return None


def projected(settings: Settings, campaign_id: str, version: int) -> dict[str, Any]:
    """The read model's row once it has applied `version`."""
    rows: list[dict[str, Any]] = []

    def caught_up() -> bool:
        row = read_model_row(settings, campaign_id)
        rows[:] = [row] if row else []
        return bool(row) and row["version"] >= version

    wait_for(caught_up, timeout=60, what=f"the read model to reach version {version}")
    return rows[0]


def price_history(settings: Settings, campaign_id: str) -> list[tuple[int, datetime, Decimal, int]]:
    tables = ReadModelTables(settings.database_schema)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        query = SQL(
            "SELECT version, at, unit_price, committed_quantity FROM {} "
            "WHERE campaign_id = %s ORDER BY version"
        ).format(tables.prices)
        return [tuple(row) for row in conn.execute(query, (campaign_id,)).fetchall()]  # type: ignore[misc]


@pytest.fixture(scope="module")
def story(services: Services) -> Iterator[Story]:
    unique = uuid.uuid4().hex[:10]
    schema = f"test_{unique}"
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    settings = Settings(
        services.database_url,
        services.kafka_bootstrap,
        f"test-{unique}.",
        schema,
        services.kafka_security,
    )
    try:
        yield tell(settings, f"story-{unique}", f"acme-{unique}")
    finally:
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def tell(settings: Settings, campaign_id: str, supplier_id: str) -> Story:
    topics = Topics(settings.topic_prefix)
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    app = open_app(settings)
    stamp = deadline.isoformat().replace("+00:00", "Z")
    definition = campaign(campaign_id, max_per_buyer=None, deadline=stamp, supplier_id=supplier_id)
    app.open_campaign(definition, datetime.now(UTC))
    services = (run_ingest, run_relay, run_project, run_clock, run_settle)
    make_site_topics(settings)
    snapshots = []
    with (
        running(services[0], settings),
        running(services[1], settings),
        running(services[2], settings),
        running(services[3], settings),
        running(services[4], settings),
    ):
        version = 1
        for wave in WAVES:
            messages = [order(campaign_id, *placed) for placed in wave]
            if wave is WAVES[-1]:
                messages.append(cancelled(order(campaign_id, *WAVES[0][1])))
            publish_orders(settings, messages)
            version += len(messages)
            snapshots.append(projected(settings, campaign_id, version))
        snapshots.append(projected(settings, campaign_id, version + 1))  # closed
        (purchase_order,) = read_json(settings, topics.settlements(supplier_id), 1)
    event_count = len(list(app.events.get(Campaign.create_id(campaign_id))))
    app.close()
    return Story(
        settings,
        campaign_id,
        snapshots,
        price_history(settings, campaign_id),
        purchase_order,
        event_count,
    )


def run_json(story: Story, *arguments: str) -> dict[str, Any]:
    done = groupbuy(story.settings, *arguments, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


SAME_FIGURES = (
    "version",
    "status",
    "unit_price",
    "committed_quantity",
    "filled_quantity",
    "buyers",
    "next_unit_price",
    "units_to_next_price",
    "deadline",
    "closed_at",
    "close_reason",
)


def test_the_story_went_as_planned(story: Story) -> None:
    figures = [(s["unit_price"], s["committed_quantity"]) for s in story.snapshots]
    assert figures == [("10.00", 17), ("8.00", 27), ("6.00", 62), ("6.00", 62)]
    assert story.snapshots[-1]["status"] == "succeeded"


def test_history_at_each_moment_matches_what_the_live_read_model_showed(story: Story) -> None:
    for snapshot in story.snapshots:
        state = run_json(story, "history", story.campaign_id, "--at", snapshot["updated_at"])

        assert {name: state[name] for name in SAME_FIGURES} == {
            name: snapshot[name] for name in SAME_FIGURES
        }


def test_history_gives_the_price_the_price_history_shows_at_each_change(story: Story) -> None:
    for _, at, _, _ in story.prices:
        shown = [price for _, when, price, _ in story.prices if when <= at][-1]
        instant = at.astimezone(UTC).isoformat().replace("+00:00", "Z")

        state = run_json(story, "history", story.campaign_id, "--at", instant)

        assert Decimal(state["unit_price"]) == shown


def test_history_at_the_opening_shows_the_opening_price_and_nothing_committed(
    story: Story,
) -> None:
    opened = story.prices[0][1].isoformat().replace("+00:00", "Z")

    state = run_json(story, "history", story.campaign_id, "--at", opened)

    assert (state["version"], state["unit_price"], state["committed_quantity"]) == (1, "10.00", 0)
    assert (state["next_unit_price"], state["units_to_next_price"]) == ("8.00", 20)


def test_history_prints_a_readable_table(story: Story) -> None:
    done = groupbuy(story.settings, "history", story.campaign_id, "--at", "2100-01-01T00:00:00Z")

    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout
    assert "units to next price" in done.stdout


def test_whatif_with_its_own_schedule_reproduces_the_real_outcome(
    story: Story, tmp_path: Path
) -> None:
    pricing = {
        "pricing": campaign("x", max_per_buyer=None).to_json_dict()["pricing"],
    }
    path = tmp_path / "own.json"
    path.write_text(json.dumps(pricing))

    comparison = run_json(story, "whatif", story.campaign_id, "--pricing", str(path))

    po = story.purchase_order
    assert comparison["changes"] == {}
    assert comparison["whatif"] == comparison["real"]
    assert (
        comparison["real"]
        | {
            "outcome": "succeeded",
            "reason": "deadline",
            "unit_price": po["unit_price"],
            "filled_quantity": po["quantity"],
            "revenue": po["total"],
            "buyers_filled": 3,
            "buyers_released": 0,
            "closed_at": po["closed_at"],
        }
        == comparison["real"]
    )


def test_whatif_under_another_schedule_gives_the_figures_worked_out_by_hand(
    story: Story, tmp_path: Path
) -> None:
    # Standing at the close: 12 at any price, 10 up to 8.00, 40 up to 6.00. At 7.00 from 20
    # units, 22 units reach 7.00; the 40 units capped at 6.00 are released.
    path = tmp_path / "cheaper.json"
    path.write_text(json.dumps(CHEAPER_SOONER))

    comparison = run_json(story, "whatif", story.campaign_id, "--pricing", str(path))

    assert comparison["whatif"] == comparison["whatif"] | {
        "outcome": "succeeded",
        "unit_price": "7.00",
        "filled_quantity": 22,
        "revenue": "154.00",
        "buyers_filled": 2,
        "buyers_released": 1,
    }
    assert list(comparison["changes"]) == ["pricing"]

    table = groupbuy(story.settings, "whatif", story.campaign_id, "--pricing", str(path))
    assert table.returncode == 0, table.stderr
    assert "-218.00" in table.stdout  # revenue: 154.00 against 372.00


def test_demand_counts_units_by_maximum_price_and_draws_the_curve(
    story: Story, tmp_path: Path
) -> None:
    png = tmp_path / "demand.png"

    curve = run_json(story, "demand", story.campaign_id, "--png", str(png))

    assert (curve["units_at_any_price"], curve["total_units"]) == (12, 62)
    assert [(p["max_unit_price"], p["units"], p["willing"]) for p in curve["points"]] == [
        ("8.00", 10, 22),
        ("6.00", 40, 62),
    ]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") >= 400
    assert len(data) > 10_000


def test_export_to_csv_has_one_row_per_stored_event(story: Story, tmp_path: Path) -> None:
    out = tmp_path / "events.csv"

    done = groupbuy(story.settings, "export", "--format", "csv", "--out", str(out))

    assert done.returncode == 0, done.stderr
    with out.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == story.event_count
    assert [row["version"] for row in rows] == [str(n) for n in range(1, story.event_count + 1)]
    assert rows[0]["type"] == "campaign.opened"
    assert json.loads(rows[0]["pricing"])["kind"] == "tiers"
    closed = rows[-1]
    assert (closed["type"], closed["unit_price"], closed["filled_quantity"]) == (
        "campaign.closed",
        "6.00",
        "62",
    )
    assert {row["campaign_id"] for row in rows} == {story.campaign_id}
    # b1's order, with no price limit (wave 1's two orders came on two sites' topics, in
    # either order).
    (first,) = [row for row in rows if row["buyer_id"] == "b1" and row["quantity"] == "12"]
    assert first["max_unit_price"] == ""


def test_export_to_parquet_reads_back_typed(story: Story, tmp_path: Path) -> None:
    out = tmp_path / "events.parquet"

    done = groupbuy(
        story.settings,
        "export",
        "--format",
        "parquet",
        "--out",
        str(out),
        "--campaign",
        story.campaign_id,
    )

    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.num_rows == story.event_count
    rows = table.to_pylist()
    assert rows[-1]["unit_price"] == Decimal("6.00")
    assert rows[-1]["type"] == "campaign.closed"
    (first,) = [row for row in rows if row["buyer_id"] == "b1" and row["quantity"] == 12]
    assert first["timestamp"].tzinfo is not None
    assert [row["notification_id"] for row in rows] == sorted(r["notification_id"] for r in rows)


def test_export_since_an_instant_leaves_out_earlier_events(story: Story, tmp_path: Path) -> None:
    out = tmp_path / "late.csv"
    since = story.snapshots[1]["updated_at"]

    done = groupbuy(
        story.settings, "export", "--format", "csv", "--out", str(out), "--since", since
    )

    assert done.returncode == 0, done.stderr
    with out.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows
    # As instants: RFC 3339 leaves out a zero fraction, so the strings do not sort.
    instant = datetime.fromisoformat
    assert all(instant(row["timestamp"]) >= instant(since) for row in rows)
    assert len(rows) < story.event_count


@pytest.mark.parametrize(
    ("arguments", "message", "code"),
    [
        (("history", "no-such-campaign", "--at", "2026-01-01T00:00:00Z"), "no campaign", 4),
        (("history", "{id}", "--at", "yesterday"), "--at must be an RFC 3339 UTC timestamp", 1),
        (("history", "{id}", "--at", "2000-01-01T00:00:00Z"), "was opened at", 1),
        (("whatif", "{id}", "--pricing", "/nonexistent/x.json"), "cannot read", 1),
        (("demand", "no-such-campaign"), "no campaign 'no-such-campaign'", 4),
        (("export", "--format", "csv", "--out", "/nonexistent/dir/x.csv"), "cannot write", 1),
        (("export", "--format", "csv", "--out", "x.csv", "--campaign", "nope"), "no campaign", 4),
    ],
)
def test_bad_input_is_a_clear_error_with_its_exit_code(
    story: Story, arguments: tuple[str, ...], message: str, code: int
) -> None:
    done = groupbuy(story.settings, *(a.replace("{id}", story.campaign_id) for a in arguments))

    assert done.returncode == code, done.stdout
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_wrong_field_in_the_pricing_file_is_named(story: Story, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    bad = {"kind": "tiers", "tiers": [{"min_quantity": 2, "unit_price": "9.00"}]}
    path.write_text(json.dumps(bad))

    done = groupbuy(story.settings, "whatif", story.campaign_id, "--pricing", str(path))

    assert done.returncode == 1
    assert "pricing.tiers[0].min_quantity: the first tier must start at 1" in done.stderr


def test_an_unreachable_database_is_exit_code_3(story: Story) -> None:
    nowhere = replace(story.settings, database_url="postgresql://u:secret@127.0.0.1:9/groupbuy")

    done = groupbuy(nowhere, "history", story.campaign_id, "--at", "2026-01-01T00:00:00Z")

    assert done.returncode == 3
    assert "cannot reach PostgreSQL at 127.0.0.1:9/groupbuy" in done.stderr


def test_the_analysts_commands_run_as_a_role_that_may_only_select(
    story: Story, tmp_path: Path
) -> None:
    """The grants of docs/contract.md ("Commands"): USAGE on the schema, SELECT on its tables."""
    role, password = f"analyst_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    schema = story.settings.database_schema
    with psycopg.connect(story.settings.database_url, autocommit=True) as conn:
        conn.execute(SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(Identifier(role), password))
        conn.execute(
            SQL("GRANT USAGE ON SCHEMA {} TO {}").format(Identifier(schema), Identifier(role))
        )
        conn.execute(
            SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(
                Identifier(schema), Identifier(role)
            )
        )
    url = make_conninfo(story.settings.database_url, user=role, password=password)
    analyst = replace(story.settings, database_url=url)
    pricing = tmp_path / "pricing.json"
    pricing.write_text(json.dumps({"floor_price": "5.00"}))
    try:
        runs = [
            groupbuy(analyst, "history", story.campaign_id, "--at", "2100-01-01T00:00:00Z"),
            groupbuy(analyst, "demand", story.campaign_id),
            groupbuy(analyst, "export", "--format", "csv", "--out", str(tmp_path / "e.csv")),
            groupbuy(analyst, "campaign", "show", story.campaign_id),
        ]
        written = groupbuy(analyst, "campaign", "cancel", story.campaign_id)
    finally:
        with psycopg.connect(story.settings.database_url, autocommit=True) as conn:
            conn.execute(SQL("DROP OWNED BY {}").format(Identifier(role)))
            conn.execute(SQL("DROP ROLE {}").format(Identifier(role)))

    assert [run.returncode for run in runs] == [0, 0, 0, 0], [run.stderr for run in runs]
    assert written.returncode != 0  # and the role cannot change anything
    assert "permission denied" in written.stderr
