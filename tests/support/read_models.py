"""Read models as tests see them: rebuilt from the store, and every row in a stable order."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.sql import SQL

from infra.adapters.app import open_app
from infra.replay.from_store import rebuild_from_store
from infra.settings import Settings
from projections.read_models import ReadModelTables


def replay_into(settings: Settings, tables: ReadModelTables, workers: int = 1) -> int:
    """Rebuild `tables` from the event store; the number of events that changed them."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return rebuild_from_store(settings, conn, tables, lambda *_: None, workers).applied


def table_rows(conn: psycopg.Connection[Any], tables: ReadModelTables) -> dict[str, list[Any]]:
    """Every read-model row, in a stable order, for comparing two sets of tables."""
    names = {
        "campaigns": tables.campaigns,
        "sites": tables.sites,
        "prices": tables.prices,
        "commitments": tables.commitments,
    }
    return {
        name: conn.execute(SQL("SELECT * FROM {} ORDER BY 1, 2, 3").format(table)).fetchall()
        for name, table in names.items()
    }


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
