"""Campaigns and order messages as the integration tests build them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.definition import CampaignDefinition

SITES = ("site-a", "site-b", "site-c")


def campaign(campaign_id: str, **changes: Any) -> CampaignDefinition:
    deadline = datetime.now(UTC) + timedelta(hours=1)
    data: dict[str, Any] = {
        "campaign_id": campaign_id,
        "sku": "SKU-1",
        "title": "A test product",
        "supplier_id": "acme",
        "currency": "EUR",
        "floor_price": "6.00",
        "pricing": {
            "kind": "tiers",
            "tiers": [
                {"min_quantity": 1, "unit_price": "10.00"},
                {"min_quantity": 20, "unit_price": "8.00"},
                {"min_quantity": 60, "unit_price": "6.00"},
            ],
        },
        "minimum_quantity": 10,
        "max_per_buyer": 6,
        "deadline": deadline.isoformat().replace("+00:00", "Z"),
    }
    return CampaignDefinition.from_json_dict(data | changes)


def placed(campaign_id: str, n: int, quantity: int = 1, **extra: Any) -> dict[str, Any]:
    site = SITES[n % len(SITES)]
    return {
        "type": "order.placed",
        "order_id": f"{site}:{campaign_id}:{n}",
        "site_id": site,
        "campaign_id": campaign_id,
        "buyer_id": f"b-{n % 17}",
        "quantity": quantity,
        "placed_at": "2026-11-27T10:00:00Z",
    } | extra


def cancelled(order: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "order.cancelled",
        "order_id": order["order_id"],
        "site_id": order["site_id"],
        "campaign_id": order["campaign_id"],
        "cancelled_at": "2026-11-27T11:00:00Z",
    }


def order(
    campaign_id: str, site: str, buyer: str, quantity: int, limit: str | None
) -> dict[str, Any]:
    message = placed(campaign_id, 0, quantity=quantity) | {
        "order_id": f"{site}:{campaign_id}:{buyer}",
        "site_id": site,
        "buyer_id": buyer,
    }
    return message | ({"max_unit_price": limit} if limit else {})


def burst(campaign_ids: list[str], count: int) -> list[dict[str, Any]]:
    """Orders, some conditional, some cancelled again, over the campaigns."""
    rng = random.Random(3)
    messages: list[dict[str, Any]] = []
    for n in range(count):
        limit = rng.choice([None, None, "10.00", "8.00", "6.00"])
        order = placed(rng.choice(campaign_ids), n, quantity=rng.randint(1, 3))
        messages.append(order | ({"max_unit_price": limit} if limit else {}))
        if n % 7 == 0:
            messages.append(cancelled(order))
    return messages
