"""What commands take and return: orders, verdicts, reasons, and how a campaign ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple


class Reason(StrEnum):
    """Why an order or a cancellation was rejected; the values are the contract's."""

    CAMPAIGN_CLOSED = "campaign_closed"
    NOT_OPEN = "not_open"
    SOLD_OUT = "sold_out"
    EXCEEDS_STOCK = "exceeds_stock"
    PER_BUYER_LIMIT = "per_buyer_limit"
    UNKNOWN_CAMPAIGN = "unknown_campaign"
    UNKNOWN_ORDER = "unknown_order"
    CUTOFF_PASSED = "cutoff_passed"
    SITE_MISMATCH = "site_mismatch"  # ingestion's alone: it never reaches a campaign
    INVALID = "invalid"


class Verdict(StrEnum):
    """Whether a command took effect."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


class CloseOutcome(StrEnum):
    """How a campaign ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CloseReason(StrEnum):
    """What closed a campaign."""

    DEADLINE = "deadline"
    SOLD_OUT = "sold_out"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Order:
    """A buyer's order as a site sent it; `placed_at` is the site's clock, kept for info."""

    order_id: str
    site_id: str
    buyer_id: str
    quantity: int
    max_unit_price: Decimal | None = None
    placed_at: datetime | None = None


class Outcome(NamedTuple):
    """One command's result, enough to publish one result message (a named tuple: every
    order makes one).

    For a repeated order or cancellation, `duplicate` is true, nothing was recorded, and
    `verdict` and `reason` repeat the first answer. An `invalid` one records nothing either:
    whatever breaks the contract's field limits never reaches the event store.
    `unit_price` and `committed_quantity` are the campaign's live figures right after the
    command.
    """

    order_id: str
    verdict: Verdict
    reason: Reason | None
    unit_price: Decimal
    committed_quantity: int
    duplicate: bool = False

    @property
    def recorded(self) -> bool:
        """Whether the command recorded an event, which then answers it; a repeat or an
        invalid command records none, and the caller answers it."""
        return not self.duplicate and self.reason is not Reason.INVALID

    @property
    def accepted(self) -> bool:
        """Whether the order or cancellation took effect (now or the first time)."""
        return self.verdict is Verdict.ACCEPTED
