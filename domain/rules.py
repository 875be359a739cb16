"""The rules that turn an order or a cancellation away, each with the contract's reason."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Protocol

from domain.definition import CampaignDefinition
from domain.ledger import Closing
from domain.money import fits_currency
from domain.outcomes import CloseReason, Order, Reason

# Far above any real order, far below what would overflow a read model's integer column.
MAX_ORDER_QUANTITY = 1_000_000
MAX_ID_LENGTH = 200


class RuledCampaign(Protocol):
    """What the rules read of a campaign: the Campaign aggregate imports this module, so
    the rules name what they need rather than import the aggregate back.

    Properties, not plain attributes: read-only members let the aggregate's computed
    `committed_quantity` and the library's `created_on` match.
    """

    @property
    def definition(self) -> CampaignDefinition: ...

    @property
    def closing(self) -> Closing | None: ...

    @property
    def deadline(self) -> datetime: ...

    @property
    def created_on(self) -> datetime: ...

    @property
    def committed_quantity(self) -> int: ...

    def buyer_quantity(self, site_id: str, buyer_id: str) -> int: ...


def order_rejection(campaign: RuledCampaign, order: Order, now: datetime) -> Reason | None:
    """Why `order` cannot be accepted now, or None if it can."""
    if not is_sensible(order, campaign.definition.currency):
        return Reason.INVALID
    if campaign.closing is not None:
        sold_out = campaign.closing.reason is CloseReason.SOLD_OUT
        return Reason.SOLD_OUT if sold_out else Reason.CAMPAIGN_CLOSED
    if now >= campaign.deadline:
        return Reason.CAMPAIGN_CLOSED
    if now < accepting_from(campaign):
        return Reason.NOT_OPEN
    limit = campaign.definition.max_per_buyer
    held = campaign.buyer_quantity(order.site_id, order.buyer_id)
    if limit is not None and held + order.quantity > limit:
        return Reason.PER_BUYER_LIMIT
    stock = campaign.definition.maximum_quantity
    if stock is not None and campaign.committed_quantity + order.quantity > stock:
        return Reason.EXCEEDS_STOCK
    return None


def accepting_from(campaign: RuledCampaign) -> datetime:
    """When orders start to count: once opened, and not before `opens_at` if it has one.

    An order that reached Kafka before the campaign was opened came too early, even if
    ingestion only applied it afterwards.
    """
    opens_at = campaign.definition.opens_at
    return campaign.created_on if opens_at is None else max(opens_at, campaign.created_on)


def cancellation_rejection(campaign: RuledCampaign, now: datetime) -> Reason | None:
    """Why a live commitment cannot be withdrawn now, or None if it can."""
    if campaign.closing is not None or now >= campaign.deadline:
        return Reason.CAMPAIGN_CLOSED
    cutoff = campaign.definition.cancellation_cutoff
    if cutoff is not None and now >= campaign.deadline - cutoff:
        return Reason.CUTOFF_PASSED
    return None


def is_sensible(order: Order, currency: str) -> bool:
    """Whether an order that parsed also makes sense: ids, quantity and price limit."""
    if not (_is_id(order.order_id) and _is_id(order.site_id) and _is_id(order.buyer_id)):
        return False
    quantity = order.quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        return False
    if not 1 <= quantity <= MAX_ORDER_QUANTITY:
        return False
    limit = order.max_unit_price
    if limit is None:
        return True
    return isinstance(limit, Decimal) and fits_currency(limit, currency) and limit > 0


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH
