"""What a closed campaign sends: to its supplier, and to the sites for each commitment."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from consumers.batch import OutboxMessage
from domain.campaign import Campaign
from domain.money import round_money
from domain.outcomes import CloseOutcome
from projections.wire import jsonable


def purchase_order_id(campaign_id: str) -> str:
    """Stable per campaign, so a redelivered copy is recognisably the same order."""
    return f"po-{campaign_id}"


def settlement_messages(
    campaign: Campaign, supplier_topic: str, buyers_topic: Callable[[str], str]
) -> list[OutboxMessage]:
    """The supplier's one message, then one per commitment still standing at close, to the
    topic `buyers_topic` names for the commitment's site. Every message is keyed by the
    campaign."""
    closing = campaign.closing
    assert closing is not None, f"{campaign.campaign_id} has not closed"
    definition = campaign.definition
    succeeded = closing.outcome is CloseOutcome.SUCCEEDED
    supplier: dict[str, Any] = {
        "campaign_id": campaign.campaign_id,
        "supplier_id": definition.supplier_id,
    }
    if succeeded:
        supplier = (
            {
                "type": "purchase_order.issued",
                "purchase_order_id": purchase_order_id(campaign.campaign_id),
            }
            | supplier
            | {
                "sku": definition.sku,
                "currency": definition.currency,
                "quantity": closing.filled_quantity,
                "unit_price": closing.unit_price,
                "total": _amount(closing.unit_price, closing.filled_quantity, definition.currency),
                "closed_at": closing.closed_at,
                "reason": closing.reason.value,
                "lines": [{"site_id": s, "quantity": q} for s, q in sorted(closing.lines.items())],
            }
        )
    else:
        supplier = (
            {"type": "campaign.failed"}
            | supplier
            | {
                "closed_at": closing.closed_at,
                "filled_quantity": closing.filled_quantity,
                "minimum_quantity": definition.minimum_quantity,
                "reason": closing.reason.value,  # deadline or sold_out below minimum, or cancelled
            }
        )
    messages = [_message(supplier_topic, campaign.campaign_id, supplier)]
    for commitment in campaign.commitments.values():
        if commitment.withdrawn:
            continue  # the site was answered when it cancelled
        filled = succeeded and commitment.fills_at(closing.unit_price)
        quantity = commitment.quantity
        settlement = {
            "type": "commitment.filled" if filled else "commitment.released",
            "order_id": commitment.order_id,
            "site_id": commitment.site_id,
            "buyer_id": commitment.buyer_id,
            "campaign_id": campaign.campaign_id,
            "quantity": quantity,
            "unit_price": closing.unit_price,
            "amount": _amount(closing.unit_price, quantity if filled else 0, definition.currency),
        }
        topic = buyers_topic(commitment.site_id)
        messages.append(_message(topic, campaign.campaign_id, settlement))
    return messages


def _amount(unit_price: Decimal, quantity: int, currency: str) -> Decimal:
    return round_money(unit_price * quantity, currency)


def _message(topic: str, key: str, fields: dict[str, Any]) -> OutboxMessage:
    # Compact, as the relay writes campaign.closed: a purchase order's lines then take the
    # same bytes as the event's, which fit campaign-events (infra/adapters/topics.py).
    value = json.dumps(jsonable(fields), separators=(",", ":")).encode()
    return OutboxMessage(topic, key.encode(), value)
