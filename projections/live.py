"""Applies campaign events to the read models, skipping any version already applied."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import Cursor
from psycopg.sql import SQL, Composed, Identifier, Placeholder
from psycopg.types.json import Jsonb

from domain.money import quantum
from domain.pricing import PriceSchedule, schedule_from_dict
from projections.next_price import next_step
from projections.read_models import CAMPAIGN_COLUMNS, ReadModelTables
from projections.wire import CampaignEvent


@dataclass
class Seen:
    """What the projection remembers of a campaign between events."""

    version: int
    schedule: PriceSchedule
    unit_price: Decimal


class LiveProjection:
    """event -> rows. Holds each campaign's last applied version, read once from its row."""

    def __init__(self, tables: ReadModelTables) -> None:
        self.sql = Statements(tables)
        self.seen: dict[str, Seen] = {}
        self.held: Held | None = None  # while coalescing: the writes held back

    def forget(self) -> None:
        self.seen.clear()

    @contextmanager
    def coalescing(self, cur: Cursor[Any]) -> Iterator[None]:
        """Within it, each campaign's row takes only its last figures, and each site's
        units one sum, written at the end: a batch of one hot campaign's commitments updates
        its row once, not once per event. A campaign's held figures are written before any
        other statement on its row, so the rows end as if written event by event."""
        self.held = Held()
        try:
            yield
            self._write_held(cur)
        finally:
            self.held = None

    def apply(self, cur: Cursor[Any], event: CampaignEvent) -> bool:
        """Apply `event` unless it was applied already; says whether it was applied.

        Raises ValueError for an event the read models cannot take (see `check`), and for
        one that comes after a gap: a missing event would leave them wrong.
        """
        check(event)
        seen = self._seen(cur, event.campaign_id)
        if event.type == "campaign.opened":
            if seen is None:
                self._opened(cur, event)
                return True
            return False
        if seen is None:
            raise ValueError(f"{event.campaign_id} v{event.version} before its opening")
        if event.version <= seen.version:
            return False  # a redelivered copy: (campaign_id, version) identifies an event
        if event.version != seen.version + 1:
            raise ValueError(
                f"{event.campaign_id} jumps from v{seen.version} to v{event.version}: "
                "an event is missing"
            )
        handler = HANDLERS.get(event.type, LiveProjection._touched)
        handler(self, cur, event, seen)
        seen.version = event.version
        return True

    def _seen(self, cur: Cursor[Any], campaign_id: str) -> Seen | None:
        if campaign_id not in self.seen:
            row = cur.execute(self.sql.select_seen, (campaign_id,)).fetchone()
            if row is None:
                return None
            version, pricing, floor_price, currency, unit_price = row
            schedule = schedule_from_dict(pricing, floor_price, quantum(currency))
            self.seen[campaign_id] = Seen(version, schedule, unit_price)
        return self.seen[campaign_id]

    def _opened(self, cur: Cursor[Any], event: CampaignEvent) -> None:
        row, schedule = opened_row(event)
        cur.execute(self.sql.insert_campaign, row)
        self._price_seen(cur, event, row["unit_price"], 0)
        self.seen[event.campaign_id] = Seen(event.version, schedule, row["unit_price"])

    def _committed(self, cur: Cursor[Any], event: CampaignEvent, seen: Seen) -> None:
        f = event.fields
        withdrawn = event.type == "commitment.withdrawn"
        price = Decimal(f["unit_price"])
        step = next_step(seen.schedule, f["filled_quantity"])
        self._write_row(
            cur,
            self.sql.update_live,
            {
                "campaign_id": event.campaign_id,
                "version": event.version,
                "unit_price": price,
                "committed_quantity": f["committed_quantity"],
                "filled_quantity": f["filled_quantity"],
                "buyers": f["buyers"],
                "next_unit_price": step[0] if step else None,
                "units_to_next_price": step[1] if step else None,
                "at": event.occurred_at,
            },
        )
        change = -f["quantity"] if withdrawn else f["quantity"]
        if self.held is None:
            cur.execute(self.sql.add_to_site, (event.campaign_id, f["site_id"], change))
        else:
            self.held.units[event.campaign_id, f["site_id"]] += change
        if withdrawn:
            cur.execute(
                self.sql.withdraw,
                (event.occurred_at, event.campaign_id, f["site_id"], f["order_id"]),
            )
        else:
            cur.execute(
                self.sql.insert_commitment,
                (
                    event.campaign_id,
                    f["order_id"],
                    f["site_id"],
                    f["buyer_id"],
                    f["quantity"],
                    decimal_or_none(f["max_unit_price"]),
                    event.occurred_at,
                    event.occurred_at,
                ),
            )
        if price != seen.unit_price:
            self._price_seen(cur, event, price, f["committed_quantity"])
            seen.unit_price = price

    def _extended(self, cur: Cursor[Any], event: CampaignEvent, seen: Seen) -> None:
        self._write_held(cur, event.campaign_id)
        cur.execute(
            self.sql.extend,
            (
                instant(event.fields["deadline"]),
                event.version,
                event.occurred_at,
                event.campaign_id,
            ),
        )

    def _closed(self, cur: Cursor[Any], event: CampaignEvent, seen: Seen) -> None:
        f = event.fields
        price = Decimal(f["unit_price"])
        self._write_held(cur, event.campaign_id)
        cur.execute(
            self.sql.close,
            {
                "campaign_id": event.campaign_id,
                "version": event.version,
                "status": f["outcome"],
                "unit_price": price,
                "filled_quantity": f["filled_quantity"],
                "closed_at": instant(f["closed_at"]),
                "reason": f["reason"],
                "at": event.occurred_at,
            },
        )
        succeeded = f["outcome"] == "succeeded"
        cur.execute(
            self.sql.settle_commitments,
            {"campaign_id": event.campaign_id, "succeeded": succeeded, "price": price},
        )
        if price != seen.unit_price:
            self._price_seen(cur, event, price, f["filled_quantity"])
            seen.unit_price = price

    def _touched(self, cur: Cursor[Any], event: CampaignEvent, seen: Seen) -> None:
        """Events that change no figure (rejections) still move the version."""
        held = self.held.rows.get(event.campaign_id) if self.held is not None else None
        if held is not None:  # the held figures, moved to this version
            held[1].update(version=event.version, at=event.occurred_at)
            return
        touch = {"version": event.version, "at": event.occurred_at}
        self._write_row(cur, self.sql.touch, touch | {"campaign_id": event.campaign_id})

    def _write_row(self, cur: Cursor[Any], statement: Composed, values: dict[str, Any]) -> None:
        """Update a campaign's row (all of it is set again, or only its version): now, or
        when coalescing, at the end."""
        if self.held is None:
            cur.execute(statement, values)
        else:
            self.held.rows[values["campaign_id"]] = (statement, values)

    def _write_held(self, cur: Cursor[Any], campaign_id: str | None = None) -> None:
        """Write the held rows (only `campaign_id`'s, if named) and the held site units."""
        if self.held is None:
            return
        rows = self.held.rows
        named = list(rows) if campaign_id is None else [campaign_id] if campaign_id in rows else []
        for held_id in named:
            cur.execute(*rows.pop(held_id))
        if campaign_id is None:
            for (held_id, site_id), change in sorted(self.held.units.items()):
                cur.execute(self.sql.add_to_site, (held_id, site_id, change))
            self.held.units.clear()

    def _price_seen(
        self, cur: Cursor[Any], event: CampaignEvent, price: Decimal, quantity: int
    ) -> None:
        cur.execute(
            self.sql.insert_price,
            (event.campaign_id, event.version, event.occurred_at, price, quantity),
        )


@dataclass
class Held:
    """Writes held back while coalescing: each campaign's last row update (its statement
    and values), and the units each site's orders added to a campaign."""

    rows: dict[str, tuple[Composed, dict[str, Any]]] = field(default_factory=dict)
    units: Counter[tuple[str, str]] = field(default_factory=Counter)


def opened_row(event: CampaignEvent) -> tuple[dict[str, Any], PriceSchedule]:
    """A just-opened campaign's row, a value for every column, and its price schedule."""
    f = event.fields
    floor = Decimal(f["floor_price"])
    schedule = schedule_from_dict(f["pricing"], floor, quantum(f["currency"]))
    step = next_step(schedule, 0)
    row = {
        "campaign_id": event.campaign_id,
        "version": event.version,
        "title": f["title"],
        "sku": f["sku"],
        "supplier_id": f["supplier_id"],
        "currency": f["currency"],
        "status": "open",
        "unit_price": schedule.price(1),
        "committed_quantity": 0,
        "filled_quantity": 0,
        "buyers": 0,
        "next_unit_price": step[0] if step else None,
        "units_to_next_price": step[1] if step else None,
        "minimum_quantity": f["minimum_quantity"],
        "maximum_quantity": f["maximum_quantity"],
        "floor_price": floor,
        "pricing": Jsonb(f["pricing"]),
        "deadline": instant(f["deadline"]),
        "opened_at": event.occurred_at,
        "closed_at": None,
        "close_reason": None,
        "updated_at": event.occurred_at,
    }
    return row, schedule


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def decimal_or_none(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


# What each event type must carry, and in what range, for the read models to hold it: a
# record of any other shape (a bug, a forged message) is refused before a row is written.
BIGINT = 2**63 - 1


def _text(value: Any) -> bool:
    return isinstance(value, str) and "\x00" not in value  # text columns cannot hold NUL


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= BIGINT


def _money(value: Any) -> bool:
    if not isinstance(value, str | Decimal):
        return False
    try:
        amount = Decimal(value)
    except ArithmeticError:
        return False
    return amount.is_finite() and abs(amount.adjusted()) < 1000


def _instant(value: Any) -> bool:
    try:
        return isinstance(value, str) and instant(value).tzinfo is not None
    except ValueError:
        return False


def _pricing(value: Any) -> bool:
    return isinstance(value, dict) and "\\u0000" not in json.dumps(value, default=str)


def _optional(fits: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or fits(value)


_CHANGE: dict[str, Callable[[Any], bool]] = {
    "order_id": _text,
    "site_id": _text,
    "quantity": _count,
    "unit_price": _money,
    "committed_quantity": _count,
    "filled_quantity": _count,
    "buyers": _count,
}
FIELDS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "campaign.opened": {
        "title": _text,
        "sku": _text,
        "supplier_id": _text,
        "currency": _text,
        "floor_price": _money,
        "pricing": _pricing,
        "minimum_quantity": _count,
        "maximum_quantity": _optional(_count),
        "deadline": _instant,
    },
    "commitment.placed": _CHANGE | {"buyer_id": _text, "max_unit_price": _optional(_money)},
    "commitment.withdrawn": _CHANGE,
    "order.rejected": {},
    "cancellation.rejected": {},
    "deadline.extended": {"deadline": _instant},
    "campaign.closed": {
        "outcome": _text,
        "reason": _text,
        "unit_price": _money,
        "filled_quantity": _count,
        "closed_at": _instant,
    },
}


def check(event: CampaignEvent) -> None:
    """Raise ValueError unless `event` has every field its type needs, each as its column
    holds it."""
    fields = FIELDS.get(event.type)
    if fields is None:
        raise ValueError(f"unknown event type {event.type!r}")
    if not _text(event.campaign_id) or not 1 <= event.version <= BIGINT:
        raise ValueError(
            f"{event.type} with a campaign_id or version the read models cannot hold: "
            f"{event.campaign_id!r:.80} v{event.version}"
        )
    if event.occurred_at.tzinfo is None:
        raise ValueError(f"occurred_at {event.occurred_at.isoformat()} without an offset")
    for name, fits in fields.items():
        if name not in event.fields:
            raise ValueError(f"{event.type} without {name}")
        if not fits(event.fields[name]):
            raise ValueError(f"{event.type} with a {name} the read models cannot hold")


HANDLERS = {
    "commitment.placed": LiveProjection._committed,
    "commitment.withdrawn": LiveProjection._committed,
    "deadline.extended": LiveProjection._extended,
    "campaign.closed": LiveProjection._closed,
}


class Statements:
    """The projection's SQL, bound to one set of tables."""

    def __init__(self, t: ReadModelTables) -> None:
        self.select_seen = SQL(
            "SELECT version, pricing, floor_price, currency, unit_price FROM {} "
            "WHERE campaign_id = %s"
        ).format(t.campaigns)
        self.insert_campaign = SQL("INSERT INTO {} ({}) VALUES ({})").format(
            t.campaigns,
            SQL(", ").join(map(Identifier, CAMPAIGN_COLUMNS)),
            SQL(", ").join(map(Placeholder, CAMPAIGN_COLUMNS)),
        )
        self.update_live = SQL(
            "UPDATE {} SET version = %(version)s, unit_price = %(unit_price)s, "
            "committed_quantity = %(committed_quantity)s, filled_quantity = %(filled_quantity)s, "
            "buyers = %(buyers)s, next_unit_price = %(next_unit_price)s, "
            "units_to_next_price = %(units_to_next_price)s, updated_at = %(at)s "
            "WHERE campaign_id = %(campaign_id)s"
        ).format(t.campaigns)
        self.add_to_site = SQL(
            "INSERT INTO {0} VALUES (%s, %s, %s) ON CONFLICT (campaign_id, site_id) "
            "DO UPDATE SET quantity = {0}.quantity + EXCLUDED.quantity"
        ).format(t.sites)
        self.insert_commitment = SQL(
            "INSERT INTO {} (campaign_id, order_id, site_id, buyer_id, quantity, max_unit_price, "
            "state, placed_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'committed', %s, %s)"
        ).format(t.commitments)
        self.withdraw = SQL(
            "UPDATE {} SET state = 'withdrawn', updated_at = %s "
            "WHERE campaign_id = %s AND site_id = %s AND order_id = %s"
        ).format(t.commitments)
        self.extend = SQL(
            "UPDATE {} SET deadline = %s, version = %s, updated_at = %s WHERE campaign_id = %s"
        ).format(t.campaigns)
        self.close = SQL(
            "UPDATE {} SET version = %(version)s, status = %(status)s, "
            "unit_price = %(unit_price)s, filled_quantity = %(filled_quantity)s, "
            "next_unit_price = NULL, units_to_next_price = NULL, closed_at = %(closed_at)s, "
            "close_reason = %(reason)s, updated_at = %(at)s WHERE campaign_id = %(campaign_id)s"
        ).format(t.campaigns)
        self.settle_commitments = SQL(
            "UPDATE {} SET unit_price = %(price)s, state = CASE WHEN %(succeeded)s AND "
            "(max_unit_price IS NULL OR max_unit_price >= %(price)s) THEN 'filled' "
            "ELSE 'released' END, filled_quantity = CASE WHEN %(succeeded)s AND "
            "(max_unit_price IS NULL OR max_unit_price >= %(price)s) THEN quantity ELSE 0 END "
            "WHERE campaign_id = %(campaign_id)s AND state = 'committed'"
        ).format(t.commitments)
        self.touch = SQL(
            "UPDATE {} SET version = %(version)s, updated_at = %(at)s "
            "WHERE campaign_id = %(campaign_id)s"
        ).format(t.campaigns)
        self.insert_price = SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s)").format(t.prices)
