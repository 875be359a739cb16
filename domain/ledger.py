"""The records a campaign keeps: each commitment, and how the campaign closed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.outcomes import CloseOutcome, CloseReason

# (site_id, order_id): what names an order, since two sites may number their orders alike.
OrderKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Commitment:
    """An accepted order; `max_unit_price` None means it commits at any price."""

    order_id: str
    site_id: str
    buyer_id: str
    quantity: int
    max_unit_price: Decimal | None
    withdrawn: bool = False

    @property
    def key(self) -> OrderKey:
        """The (site_id, order_id) that names this commitment's order."""
        return (self.site_id, self.order_id)

    def fills_at(self, unit_price: Decimal) -> bool:
        """Whether this commitment is filled when the group's price is `unit_price`."""
        if self.withdrawn:
            return False
        return self.max_unit_price is None or self.max_unit_price >= unit_price


@dataclass(frozen=True, slots=True)
class Closing:
    """How a campaign ended; `lines` are filled units by site (empty unless it succeeded)."""

    outcome: CloseOutcome
    reason: CloseReason
    unit_price: Decimal
    filled_quantity: int
    lines: dict[str, int]
    closed_at: datetime

    @classmethod
    def from_event(
        cls,
        outcome: str,
        reason: str,
        unit_price: Decimal,
        filled_quantity: int,
        lines: list[dict[str, Any]],
        closed_at: datetime,
    ) -> Closing:
        """The closing a Closed event records."""
        return cls(
            outcome=CloseOutcome(outcome),
            reason=CloseReason(reason),
            unit_price=unit_price,
            filled_quantity=filled_quantity,
            lines={line["site_id"]: line["quantity"] for line in lines},
            closed_at=closed_at,
        )

    def to_event_fields(self) -> dict[str, Any]:
        """The fields of the Closed event that recorded this closing."""
        return {
            "outcome": self.outcome.value,
            "reason": self.reason.value,
            "unit_price": self.unit_price,
            "filled_quantity": self.filled_quantity,
            "lines": [{"site_id": s, "quantity": q} for s, q in self.lines.items()],
            "closed_at": self.closed_at,
        }
