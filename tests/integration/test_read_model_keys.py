"""Read models key an order by its site: two sites' orders with one id are two commitments."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg.sql import SQL

from consumers.batch import Record
from consumers.projector import ProjectorSink
from domain.campaign import Campaign
from domain.outcomes import Order
from infra.adapters.app import open_app
from infra.settings import Settings
from projections.read_models import TABLES, ReadModelTables
from projections.wire import encode
from tests.support.builders import campaign
from tests.support.read_models import replay_into, table_rows

TOPIC = "groupbuy.campaign-events.v1"


def store_two_sites_with_one_order_id(settings: Settings, campaign_id: str) -> list[Record]:
    """site-a's and site-b's order `1001`, then site-b's withdrawn; the relay's records."""
    app = open_app(settings)
    now = datetime.now(UTC)
    app.open_campaign(campaign(campaign_id, max_per_buyer=None), now)
    app.place_order(campaign_id, Order("1001", "site-a", "b-1", 2, None), now)
    app.place_order(campaign_id, Order("1001", "site-b", "b-2", 3, None), now)
    app.cancel_order(campaign_id, "1001", "site-b", now)
    stored = list(app.events.get(Campaign.create_id(campaign_id)))
    app.close()
    return [
        Record(TOPIC, 0, offset, 0, None, encode(event, campaign_id))
        for offset, event in enumerate(stored)
    ]


def commitments(settings: Settings, tables: ReadModelTables) -> list[tuple[str, str, str]]:
    query = SQL("SELECT site_id, order_id, state FROM {} ORDER BY site_id").format(
        tables.commitments
    )
    with psycopg.connect(settings.database_url) as conn:
        return [tuple(row) for row in conn.execute(query).fetchall()]


def test_two_sites_orders_with_one_id_are_two_commitments_live_and_rebuilt(
    settings: Settings, unique: str
) -> None:
    tables = ReadModelTables(settings.database_schema)
    records = store_two_sites_with_one_order_id(settings, f"keys-{unique}")

    sink = ProjectorSink(settings.database_url, tables)
    sink.process(records, {f"{TOPIC}:0": None})
    sink.close()
    rebuilt = ReadModelTables(settings.database_schema, prefix="rebuilt_")
    replay_into(settings, rebuilt)

    assert commitments(settings, tables) == [
        ("site-a", "1001", "committed"),
        ("site-b", "1001", "withdrawn"),
    ]
    with psycopg.connect(settings.database_url) as conn:
        assert table_rows(conn, tables) == table_rows(conn, rebuilt)


def test_commitments_keyed_by_order_id_alone_are_rekeyed_by_site_at_start(
    settings: Settings, unique: str
) -> None:
    tables = ReadModelTables(settings.database_schema)
    older = TABLES.replace(
        "PRIMARY KEY (campaign_id, site_id, order_id)", "PRIMARY KEY (campaign_id, order_id)"
    )
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            SQL(older).format(
                campaigns=tables.campaigns,
                sites=tables.sites,
                prices=tables.prices,
                commitments=tables.commitments,
                positions=tables.positions,
            )
        )
    records = store_two_sites_with_one_order_id(settings, f"rekey-{unique}")

    sink = ProjectorSink(settings.database_url, tables)
    sink.process(records, {f"{TOPIC}:0": None})
    sink.close()

    assert [site for site, _, _ in commitments(settings, tables)] == ["site-a", "site-b"]
