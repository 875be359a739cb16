"""The rules that turn an order or a cancellation away, each with the contract's reason."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Protocol

from domain.definition import MAX_QUANTITY, CampaignDefinition
from domain.ledger import Closing
from domain.money import MONEY_CEILING, fits_currency
from domain.outcomes import CloseReason, Order, Reason
from domain.text import is_identifier, is_slug

# Far above any real order; a thousand of them still fit a campaign's MAX_QUANTITY.
MAX_ORDER_QUANTITY = 1_000_000

# The rejections that hold an order's (site_id, order_id) for good (`is_remembered`).
_REMEMBERED = frozenset(
    {Reason.CAMPAIGN_CLOSED, Reason.SOLD_OUT, Reason.EXCEEDS_STOCK, Reason.PER_BUYER_LIMIT}
)


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
    """Why a sensible `order` cannot be accepted now, or None if it can.

    The stock is `maximum_quantity`, or MAX_QUANTITY units when the campaign has no cap: an
    order that would pass it is rejected `exceeds_stock` (but reaching MAX_QUANTITY does not
    close such a campaign as sold out).
    """
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
    if stock is None:
        stock = MAX_QUANTITY
    if campaign.committed_quantity + order.quantity > stock:
        return Reason.EXCEEDS_STOCK
    return None


def is_remembered(reason: Reason) -> bool:
    """Whether an order rejected for `reason` holds its (site_id, order_id), so that the same
    order sent again gets the same answer without being decided again.

    A site sends an order again after a crash or a timeout, and must not see an order it was
    told was rejected turn into a commitment later. So the rejections that the campaign's
    state and the order's own figures give (campaign_closed, sold_out, exceeds_stock,
    per_buyer_limit) are remembered: the site needs a new order_id to try again.

    Two are not, so that nobody can reserve an id against the genuine order. `invalid`
    follows from the message alone: the same message sent again is invalid again anyway,
    and a corrected one is decided afresh. `not_open` means "too early": the same order
    sent once the campaign is open counts.
    """
    return reason in _REMEMBERED


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
    """Whether an order keeps to the contract's field limits (ids, quantity, price limit);
    one that does not is answered `invalid` and never stored."""
    if not (is_order_key(order.site_id, order.order_id) and is_identifier(order.buyer_id)):
        return False
    quantity = order.quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        return False
    if not 1 <= quantity <= MAX_ORDER_QUANTITY:
        return False
    limit = order.max_unit_price
    if limit is None:
        return True
    return (
        isinstance(limit, Decimal) and fits_currency(limit, currency) and 0 < limit < MONEY_CEILING
    )


def is_order_key(site_id: object, order_id: object) -> bool:
    """Whether (site_id, order_id) can name an order: a slug and an id of the contract."""
    return is_slug(site_id) and is_identifier(order_id)
