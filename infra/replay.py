"""Rebuilds read models from zero, from the event store, in notification order."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg.sql import SQL

from domain.application import GroupBuying
from domain.campaign import Campaign
from projections.live import LiveProjection
from projections.read_models import ReadModelTables
from projections.wire import decode, encode

BATCH = 5000


def replay_into(app: GroupBuying, conn: psycopg.Connection[Any], tables: ReadModelTables) -> int:
    """Apply every stored event to `tables` (created if missing); the number applied."""
    with conn.transaction():
        conn.execute(tables.create_statement())
    projection = LiveProjection(tables)
    slugs: dict[UUID, str] = {}
    applied, after = 0, 0
    while notifications := app.recorder.select_notifications(
        after, BATCH, inclusive_of_start=False
    ):
        with conn.transaction(), conn.cursor() as cur:
            for notification in notifications:
                event = app.mapper.to_domain_event(notification)
                if isinstance(event, Campaign.Opened):
                    slugs[UUID(str(notification.originator_id))] = event.campaign_id
                slug = slugs[UUID(str(notification.originator_id))]
                # Through the wire format, so a rebuild reads exactly what the projector reads.
                applied += projection.apply(cur, decode(encode(event, slug)))
        after = notifications[-1].id
    return applied


def table_rows(conn: psycopg.Connection[Any], tables: ReadModelTables) -> dict[str, list[Any]]:
    """Every read-model row, in a stable order, for comparing two sets of tables."""
    names = {
        "campaigns": tables.campaigns,
        "sites": tables.sites,
        "prices": tables.prices,
        "commitments": tables.commitments,
    }
    return {
        name: conn.execute(SQL("SELECT * FROM {} ORDER BY 1, 2").format(table)).fetchall()
        for name, table in names.items()
    }
