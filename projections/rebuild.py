"""A set of read models built from zero in one pass, for `groupbuy replay`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import Cursor
from psycopg.sql import SQL, Composed, Identifier

from domain.pricing import PriceSchedule
from projections.live import Statements, decimal_or_none, instant, opened_row
from projections.next_price import next_step
from projections.read_models import CAMPAIGN_COLUMNS, ReadModelTables
from projections.wire import CampaignEvent

FLUSH_ROWS = 20_000  # streamed rows held before a COPY

COMMITMENT_COLUMNS = (
    "campaign_id",
    "order_id",
    "site_id",
    "buyer_id",
    "quantity",
    "max_unit_price",
    "state",
    "filled_quantity",
    "unit_price",
    "placed_at",
    "updated_at",
)
ENDING_TYPES = ("campaign.opened", "commitment.withdrawn", "campaign.closed")


@dataclass
class Endings:
    """How commitments end, gathered before the fold from the events that end them."""

    withdrawn: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    closed: dict[str, tuple[bool, Decimal]] = field(default_factory=dict)

    def note(self, event: CampaignEvent) -> None:
        f = event.fields
        if event.type == "commitment.withdrawn":
            self.withdrawn[event.campaign_id, f["site_id"], f["order_id"]] = event.occurred_at
        elif event.type == "campaign.closed":
            self.closed[event.campaign_id] = (f["outcome"] == "succeeded", Decimal(f["unit_price"]))

    def of(self, event: CampaignEvent) -> tuple[str, int | None, Decimal | None, datetime]:
        """A placed commitment's final (state, filled quantity, unit price, updated at)."""
        f = event.fields
        withdrawn_at = self.withdrawn.get((event.campaign_id, f["site_id"], f["order_id"]))
        if withdrawn_at is not None:
            return "withdrawn", None, None, withdrawn_at
        closed = self.closed.get(event.campaign_id)
        if closed is None:
            return "committed", None, None, event.occurred_at
        succeeded, price = closed
        limit = f["max_unit_price"]
        if succeeded and (limit is None or Decimal(limit) >= price):
            return "filled", f["quantity"], price, event.occurred_at
        return "released", 0, price, event.occurred_at


@dataclass
class CampaignRow:
    """A campaign's row as it stands after the events folded so far."""

    values: dict[str, Any]
    schedule: PriceSchedule


@dataclass
class ReadModelBuild:
    """Fold events (in each campaign's version order) into `tables`, then `finish`."""

    tables: ReadModelTables
    endings: Endings | None = None
    campaigns: dict[str, CampaignRow] = field(default_factory=dict)
    sites: dict[tuple[str, str], int] = field(default_factory=dict)
    commitments: list[tuple[Any, ...]] = field(default_factory=list)
    prices: list[tuple[Any, ...]] = field(default_factory=list)
    withdrawals: list[tuple[datetime, str, str, str]] = field(default_factory=list)
    closes: list[dict[str, Any]] = field(default_factory=list)
    applied: int = 0

    def apply(self, event: CampaignEvent) -> bool:
        """Fold one event; False for one already folded. ValueError for one after a gap."""
        row = self.campaigns.get(event.campaign_id)
        if event.type == "campaign.opened":
            if row is not None:
                return False
            self._opened(event)
        elif row is None:
            raise ValueError(f"{event.campaign_id} v{event.version} before its opening")
        elif event.version <= row.values["version"]:
            return False
        elif event.version != row.values["version"] + 1:
            raise ValueError(
                f"{event.campaign_id} jumps from v{row.values['version']} to v{event.version}"
            )
        elif event.type in ("commitment.placed", "commitment.withdrawn"):
            self._committed(row, event)
        elif event.type == "deadline.extended":
            row.values["deadline"] = instant(event.fields["deadline"])
        elif event.type == "campaign.closed":
            self._closed(row, event)
        if row is not None:
            row.values["version"] = event.version
            row.values["updated_at"] = event.occurred_at
        self.applied += 1
        return True

    def flush(self, cur: Cursor[Any]) -> None:
        """Write the streamed rows (commitments, price points) held so far."""
        _copy(cur, self.tables.commitments, COMMITMENT_COLUMNS, self.commitments)
        _copy(cur, self.tables.prices, (), self.prices)
        self.commitments.clear()
        self.prices.clear()

    def finish(self, cur: Cursor[Any]) -> None:
        """Write everything still held: campaigns, sites, then withdrawals and closes."""
        self.flush(cur)
        rows = (_with_next_step(row) for row in self.campaigns.values())
        _copy(cur, self.tables.campaigns, CAMPAIGN_COLUMNS, rows)
        sites = (
            (campaign_id, site_id, quantity)
            for (campaign_id, site_id), quantity in self.sites.items()
        )
        _copy(cur, self.tables.sites, (), sites)
        # Withdrawals come before their campaign's close, so they go first here too: all in
        # one statement, the closes with the live projector's own update.
        if self.withdrawals:
            at, campaign_ids, site_ids, order_ids = map(list, zip(*self.withdrawals, strict=True))
            cur.execute(_withdraw_all(self.tables), (campaign_ids, site_ids, order_ids, at))
        cur.executemany(Statements(self.tables).settle_commitments, self.closes)
        self.campaigns.clear()
        self.sites.clear()
        self.withdrawals.clear()
        self.closes.clear()

    def _opened(self, event: CampaignEvent) -> None:
        values, schedule = opened_row(event)
        self.campaigns[event.campaign_id] = CampaignRow(values, schedule)
        price = values["unit_price"]
        self.prices.append((event.campaign_id, event.version, event.occurred_at, price, 0))

    def _committed(self, row: CampaignRow, event: CampaignEvent) -> None:
        f, values = event.fields, row.values
        price = Decimal(f["unit_price"])
        if price != values["unit_price"]:
            self.prices.append(
                (
                    event.campaign_id,
                    event.version,
                    event.occurred_at,
                    price,
                    f["committed_quantity"],
                )
            )
        values["unit_price"] = price
        values["committed_quantity"] = f["committed_quantity"]
        values["filled_quantity"] = f["filled_quantity"]
        values["buyers"] = f["buyers"]
        site = (event.campaign_id, f["site_id"])
        if event.type == "commitment.withdrawn":
            self.sites[site] = self.sites.get(site, 0) - f["quantity"]
            if self.endings is None:  # else its commitment was written withdrawn already
                self.withdrawals.append(
                    (event.occurred_at, event.campaign_id, f["site_id"], f["order_id"])
                )
            return
        self.sites[site] = self.sites.get(site, 0) + f["quantity"]
        if self.endings is None:
            state, filled, unit_price, updated_at = "committed", None, None, event.occurred_at
        else:
            state, filled, unit_price, updated_at = self.endings.of(event)
        self.commitments.append(
            (
                event.campaign_id,
                f["order_id"],
                f["site_id"],
                f["buyer_id"],
                f["quantity"],
                decimal_or_none(f["max_unit_price"]),
                state,
                filled,
                unit_price,
                event.occurred_at,
                updated_at,
            )
        )

    def _closed(self, row: CampaignRow, event: CampaignEvent) -> None:
        f, values = event.fields, row.values
        price = Decimal(f["unit_price"])
        if price != values["unit_price"]:
            self.prices.append(
                (event.campaign_id, event.version, event.occurred_at, price, f["filled_quantity"])
            )
        values.update(
            status=f["outcome"],
            unit_price=price,
            filled_quantity=f["filled_quantity"],
            next_unit_price=None,
            units_to_next_price=None,
            closed_at=instant(f["closed_at"]),
            close_reason=f["reason"],
        )
        if self.endings is None:  # else its commitments were written filled or released
            succeeded = f["outcome"] == "succeeded"
            self.closes.append(
                {"campaign_id": event.campaign_id, "succeeded": succeeded, "price": price}
            )


def _copy(cur: Cursor[Any], table: Identifier, columns: tuple[str, ...], rows: Any) -> None:
    names = SQL("({})").format(SQL(", ").join(map(Identifier, columns))) if columns else SQL("")
    with cur.copy(SQL("COPY {} {} FROM STDIN").format(table, names)) as copy:
        for row in rows:
            copy.write_row(row)


def _withdraw_all(tables: ReadModelTables) -> Composed:
    return SQL(
        "UPDATE {0} SET state = 'withdrawn', updated_at = w.at "
        "FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) "
        "AS w(campaign_id, site_id, order_id, at) WHERE {0}.campaign_id = w.campaign_id "
        "AND {0}.site_id = w.site_id AND {0}.order_id = w.order_id"
    ).format(tables.commitments)


def _with_next_step(row: CampaignRow) -> tuple[Any, ...]:
    """The row's values; the next price is worked out once, for the last filled quantity."""
    values = row.values
    if values["status"] == "open":
        step = next_step(row.schedule, values["filled_quantity"])
        values["next_unit_price"] = step[0] if step else None
        values["units_to_next_price"] = step[1] if step else None
    return tuple(values[name] for name in CAMPAIGN_COLUMNS)
