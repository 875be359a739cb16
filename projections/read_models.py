"""The read models' tables: live campaigns, per-site quantities, price history, commitments."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from psycopg import Cursor
from psycopg.sql import SQL, Composed, Identifier

TABLES = """
CREATE TABLE IF NOT EXISTS {campaigns} (
    campaign_id text PRIMARY KEY,
    version bigint NOT NULL,
    title text NOT NULL,
    sku text NOT NULL,
    supplier_id text NOT NULL,
    currency text NOT NULL,
    status text NOT NULL,
    unit_price numeric NOT NULL,
    committed_quantity bigint NOT NULL,
    filled_quantity bigint NOT NULL,
    buyers bigint NOT NULL,
    next_unit_price numeric,
    units_to_next_price bigint,
    minimum_quantity bigint NOT NULL,
    maximum_quantity bigint,
    floor_price numeric NOT NULL,
    pricing jsonb NOT NULL,
    deadline timestamptz NOT NULL,
    opened_at timestamptz NOT NULL,
    closed_at timestamptz,
    close_reason text,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {sites} (
    campaign_id text NOT NULL,
    site_id text NOT NULL,
    quantity bigint NOT NULL,
    PRIMARY KEY (campaign_id, site_id)
);
CREATE TABLE IF NOT EXISTS {prices} (
    campaign_id text NOT NULL,
    version bigint NOT NULL,
    at timestamptz NOT NULL,
    unit_price numeric NOT NULL,
    committed_quantity bigint NOT NULL,
    PRIMARY KEY (campaign_id, version)
);
CREATE TABLE IF NOT EXISTS {commitments} (
    campaign_id text NOT NULL,
    order_id text NOT NULL,
    site_id text NOT NULL,
    buyer_id text NOT NULL,
    quantity bigint NOT NULL,
    max_unit_price numeric,
    state text NOT NULL,
    filled_quantity bigint,
    unit_price numeric,
    placed_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, site_id, order_id)
);
CREATE TABLE IF NOT EXISTS {positions} (
    application_name text PRIMARY KEY,
    notification_id bigint NOT NULL
);
"""
ROW_TABLES = ("campaigns", "campaign_sites", "price_history", "commitments")  # past the prefix
# Quantities and versions were `int` before they were `bigint`; tables made then still are.
NARROW_COLUMNS = """
SELECT table_name, column_name FROM information_schema.columns
WHERE table_schema = %s AND table_name = ANY(%s) AND data_type = 'integer'
ORDER BY table_name, ordinal_position
"""
# An order is its site's (site_id, order_id); commitments tables made before were keyed
# by order_id alone.
OLD_COMMITMENTS_KEY = """
SELECT c.conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %s AND t.relname = %s AND c.contype = 'p' AND array_length(c.conkey, 1) = 2
"""


# The campaigns table's columns, in their order.
CAMPAIGN_COLUMNS = (
    "campaign_id",
    "version",
    "title",
    "sku",
    "supplier_id",
    "currency",
    "status",
    "unit_price",
    "committed_quantity",
    "filled_quantity",
    "buyers",
    "next_unit_price",
    "units_to_next_price",
    "minimum_quantity",
    "maximum_quantity",
    "floor_price",
    "pricing",
    "deadline",
    "opened_at",
    "closed_at",
    "close_reason",
    "updated_at",
)


@dataclass(frozen=True)
class ReadModelTables:
    """Where one set of read models lives: a schema and a name prefix (for rebuilds)."""

    schema: str
    prefix: str = "rm_"

    def table(self, name: str) -> Identifier:
        return Identifier(self.schema, self.prefix + name)

    @property
    def campaigns(self) -> Identifier:
        return self.table("campaigns")

    @property
    def sites(self) -> Identifier:
        return self.table("campaign_sites")

    @property
    def prices(self) -> Identifier:
        return self.table("price_history")

    @property
    def commitments(self) -> Identifier:
        return self.table("commitments")

    @property
    def positions(self) -> Identifier:
        return self.table("positions")

    @property
    def channel(self) -> str:
        """The PostgreSQL notification channel on which the projector names each campaign a
        committed batch changed (`groupbuy serve` listens to push it): one per schema.
        PostgreSQL takes a channel name of up to 63 bytes."""
        name = f"groupbuy.live.{self.schema}"
        if len(name.encode()) <= 63:
            return name
        return "groupbuy.live." + hashlib.sha256(self.schema.encode()).hexdigest()[:40]

    def widen(self, cur: Cursor[Any]) -> list[str]:
        """Make any `int` column of these tables `bigint`: a sum of quantities outgrows int4
        (docs/contract.md, "Field limits"). The columns widened; none once done."""
        names = [self.prefix + name for name in ROW_TABLES]
        narrow: dict[str, list[str]] = {}
        for table, column in cur.execute(NARROW_COLUMNS, (self.schema, names)).fetchall():
            narrow.setdefault(table, []).append(column)
        for table, columns in narrow.items():
            alterations = SQL(", ").join(
                SQL("ALTER COLUMN {} TYPE bigint").format(Identifier(column)) for column in columns
            )
            cur.execute(SQL("ALTER TABLE {} ").format(Identifier(self.schema, table)) + alterations)
        widened = [f"{table}.{column}" for table, columns in narrow.items() for column in columns]
        return widened + self._rekey_commitments(cur)

    def _rekey_commitments(self, cur: Cursor[Any]) -> list[str]:
        """Key commitments by (campaign, site, order) where they are keyed by (campaign, order)."""
        name = self.prefix + "commitments"
        row = cur.execute(OLD_COMMITMENTS_KEY, (self.schema, name)).fetchone()
        if row is None:
            return []
        rekey = SQL("ALTER TABLE {} DROP CONSTRAINT {}, ADD PRIMARY KEY {}").format(
            self.commitments, Identifier(row[0]), SQL("(campaign_id, site_id, order_id)")
        )
        cur.execute(rekey)
        return [f"{name} keyed by (campaign_id, site_id, order_id)"]

    def create_statement(self) -> Composed:
        return SQL(TABLES).format(
            campaigns=self.campaigns,
            sites=self.sites,
            prices=self.prices,
            commitments=self.commitments,
            positions=self.positions,
        )
