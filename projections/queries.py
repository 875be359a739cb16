"""Reads of the read models, as plain JSON-ready dictionaries."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL

from projections.read_models import ReadModelTables
from projections.wire import jsonable

LIST_COLUMNS = (
    "campaign_id, version, title, status, currency, unit_price, committed_quantity, "
    "filled_quantity, buyers, next_unit_price, units_to_next_price, deadline"
)


def campaign(
    conn: psycopg.Connection[Any], tables: ReadModelTables, campaign_id: str
) -> dict[str, Any] | None:
    """One campaign as the live read model shows it, with its quantities by site."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            SQL("SELECT * FROM {} WHERE campaign_id = %s").format(tables.campaigns),
            (campaign_id,),
        ).fetchone()
        if row is None:
            return None
        sites = cur.execute(
            SQL("SELECT site_id, quantity FROM {} WHERE campaign_id = %s ORDER BY site_id").format(
                tables.sites
            ),
            (campaign_id,),
        ).fetchall()
    view: dict[str, Any] = jsonable(row | {"sites": sites})
    return view


def live(
    conn: psycopg.Connection[Any], tables: ReadModelTables, campaign_id: str
) -> dict[str, Any] | None:
    """What a campaign's live stream sends: the figures `campaigns` lists."""
    query = SQL("SELECT " + LIST_COLUMNS + " FROM {} WHERE campaign_id = %s").format(
        tables.campaigns
    )
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, (campaign_id,)).fetchone()
    return None if row is None else jsonable(row)


def campaigns(
    conn: psycopg.Connection[Any], tables: ReadModelTables, status: str | None = None
) -> list[dict[str, Any]]:
    """Every campaign (or those of one status), soonest deadline first."""
    query = SQL("SELECT " + LIST_COLUMNS + " FROM {}").format(tables.campaigns)
    if status:
        query += SQL(" WHERE status = %s")
    query += SQL(" ORDER BY deadline, campaign_id")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, (status,) if status else ()).fetchall()
    return [jsonable(row) for row in rows]


def price_history(
    conn: psycopg.Connection[Any], tables: ReadModelTables, campaign_id: str
) -> list[dict[str, Any]]:
    """Each price the campaign showed, with the units committed then, oldest first."""
    query = SQL(
        "SELECT version, at, unit_price, committed_quantity FROM {} "
        "WHERE campaign_id = %s ORDER BY version"
    ).format(tables.prices)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, (campaign_id,)).fetchall()
    return [jsonable(row) for row in rows]
