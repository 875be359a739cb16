"""Campaign definitions, orders and instants that the domain's unit tests share."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.campaign import Campaign
from domain.definition import CampaignDefinition
from domain.outcomes import Order

OPENED_AT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
DEADLINE = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
DURING = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)

# The example definition of docs/contract.md, word for word.
LAPTOP_X1: dict[str, Any] = {
    "campaign_id": "laptop-x1",
    "sku": "LAPTOP-X1",
    "title": "X1 laptop, 16 GB",
    "supplier_id": "acme",
    "currency": "EUR",
    "floor_price": "79.00",
    "pricing": {
        "kind": "tiers",
        "tiers": [
            {"min_quantity": 1, "unit_price": "120.00"},
            {"min_quantity": 100, "unit_price": "99.00"},
            {"min_quantity": 500, "unit_price": "85.00"},
            {"min_quantity": 1000, "unit_price": "79.00"},
        ],
    },
    "minimum_quantity": 100,
    "maximum_quantity": 5000,
    "max_per_buyer": 5,
    "deadline": "2026-12-01T18:00:00Z",
    "cancellation_cutoff": "PT1H",
}

# Small numbers, so that tests reach every tier with a handful of orders.
SMALL_TIERS: dict[str, Any] = {
    "kind": "tiers",
    "tiers": [
        {"min_quantity": 1, "unit_price": "10.00"},
        {"min_quantity": 5, "unit_price": "8.00"},
        {"min_quantity": 10, "unit_price": "6.00"},
    ],
}

_order_numbers = itertools.count(1)


def definition_json(**changes: Any) -> dict[str, Any]:
    """The contract's example with some fields changed (None removes a field)."""
    data = copy.deepcopy(LAPTOP_X1)
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def small_definition(**changes: Any) -> CampaignDefinition:
    """A campaign of small quantities: 10.00 from 1 unit, 8.00 from 5, 6.00 from 10."""
    fields: dict[str, Any] = {
        "campaign_id": "small",
        "floor_price": "5.00",
        "pricing": SMALL_TIERS,
        "minimum_quantity": 5,
        "maximum_quantity": 20,
        "max_per_buyer": 6,
    }
    fields.update(changes)
    return CampaignDefinition.from_json_dict(definition_json(**fields))


def open_campaign(**changes: Any) -> Campaign:
    """A small campaign, opened at OPENED_AT, with its Opened event already collected."""
    campaign = Campaign.open(small_definition(**changes), OPENED_AT)
    campaign.collect_events()
    return campaign


def order(
    quantity: int = 1,
    *,
    buyer: str | None = None,
    site: str = "site-a",
    max_price: str | None = None,
    order_id: str | None = None,
) -> Order:
    """An order with fresh ids unless given."""
    number = next(_order_numbers)
    return Order(
        order_id=order_id or f"{site}:{number}",
        site_id=site,
        buyer_id=buyer or f"buyer-{number}",
        quantity=quantity,
        max_unit_price=Decimal(max_price) if max_price is not None else None,
    )


def before_deadline(duration: timedelta) -> datetime:
    """An instant `duration` before the deadline."""
    return DEADLINE - duration


# The example order messages of docs/contract.md.
PLACED: dict[str, Any] = {
    "type": "order.placed",
    "order_id": "site-a:1001",
    "site_id": "site-a",
    "campaign_id": "laptop-x1",
    "buyer_id": "b-42",
    "quantity": 2,
    "max_unit_price": "95.00",
    "placed_at": "2026-11-27T10:00:00Z",
}
CANCELLED: dict[str, Any] = {
    "type": "order.cancelled",
    "order_id": "site-a:1001",
    "site_id": "site-a",
    "campaign_id": "laptop-x1",
    "cancelled_at": "2026-11-27T11:00:00Z",
}
