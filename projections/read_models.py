"""The read models' tables: live campaigns, per-site quantities, price history, commitments."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg.sql import SQL, Composed, Identifier

TABLES = """
CREATE TABLE IF NOT EXISTS {campaigns} (
    campaign_id text PRIMARY KEY,
    version int NOT NULL,
    title text NOT NULL,
    sku text NOT NULL,
    supplier_id text NOT NULL,
    currency text NOT NULL,
    status text NOT NULL,
    unit_price numeric NOT NULL,
    committed_quantity int NOT NULL,
    filled_quantity int NOT NULL,
    buyers int NOT NULL,
    next_unit_price numeric,
    units_to_next_price int,
    minimum_quantity int NOT NULL,
    maximum_quantity int,
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
    quantity int NOT NULL,
    PRIMARY KEY (campaign_id, site_id)
);
CREATE TABLE IF NOT EXISTS {prices} (
    campaign_id text NOT NULL,
    version int NOT NULL,
    at timestamptz NOT NULL,
    unit_price numeric NOT NULL,
    committed_quantity int NOT NULL,
    PRIMARY KEY (campaign_id, version)
);
CREATE TABLE IF NOT EXISTS {commitments} (
    campaign_id text NOT NULL,
    order_id text NOT NULL,
    site_id text NOT NULL,
    buyer_id text NOT NULL,
    quantity int NOT NULL,
    max_unit_price numeric,
    state text NOT NULL,
    filled_quantity int,
    unit_price numeric,
    placed_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, order_id)
);
CREATE TABLE IF NOT EXISTS {positions} (
    application_name text PRIMARY KEY,
    notification_id bigint NOT NULL
);
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

    def create_statement(self) -> Composed:
        return SQL(TABLES).format(
            campaigns=self.campaigns,
            sites=self.sites,
            prices=self.prices,
            commitments=self.commitments,
            positions=self.positions,
        )
