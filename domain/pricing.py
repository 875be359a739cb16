"""Price schedules: the unit price a campaign gives at each committed quantity."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Tier:
    """From `min_quantity` units on, each unit costs `unit_price`."""

    min_quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class TierSchedule:
    """Steps down at each tier's minimum quantity, never below the floor."""

    tiers: tuple[Tier, ...]
    floor_price: Decimal
    # Worked out once: every order prices the campaign a few times.
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _prices: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(t.min_quantity for t in self.tiers))
        prices = tuple(max(t.unit_price, self.floor_price) for t in self.tiers)
        object.__setattr__(self, "_prices", prices)

    def price(self, quantity: int) -> Decimal:
        """The unit price when `quantity` units are committed (at least the first tier's)."""
        return self._prices[max(bisect_right(self._starts, quantity) - 1, 0)]

    def prices(self) -> list[Decimal]:
        """Every price this schedule can give, highest first."""
        return sorted({max(t.unit_price, self.floor_price) for t in self.tiers}, reverse=True)

    def to_dict(self) -> dict[str, Any]:
        """The `pricing` object of a campaign definition, money as Decimal."""
        tiers = [{"min_quantity": t.min_quantity, "unit_price": t.unit_price} for t in self.tiers]
        return {"kind": "tiers", "tiers": tiers}


@dataclass(frozen=True, slots=True)
class LinearSchedule:
    """List price up to `from_quantity`, then linearly down to the floor at `to_quantity`."""

    list_price: Decimal
    from_quantity: int
    to_quantity: int
    floor_price: Decimal
    quantum: Decimal

    def price(self, quantity: int) -> Decimal:
        """The unit price when `quantity` units are committed, rounded to the minor unit."""
        if quantity <= self.from_quantity:
            return self.list_price
        if quantity >= self.to_quantity:
            return self.floor_price
        drop = (self.list_price - self.floor_price) * (quantity - self.from_quantity)
        exact = self.list_price - drop / (self.to_quantity - self.from_quantity)
        return max(exact.quantize(self.quantum, rounding=ROUND_HALF_UP), self.floor_price)

    def prices(self) -> list[Decimal]:
        """Every price this schedule can give, highest first."""
        quantities = range(self.from_quantity, self.to_quantity + 1)
        return sorted({self.price(q) for q in quantities}, reverse=True)

    def to_dict(self) -> dict[str, Any]:
        """The `pricing` object of a campaign definition, money as Decimal."""
        return {
            "kind": "linear",
            "list_price": self.list_price,
            "from_quantity": self.from_quantity,
            "to_quantity": self.to_quantity,
        }


PriceSchedule = TierSchedule | LinearSchedule


def schedule_from_dict(
    pricing: dict[str, Any], floor_price: Decimal, quantum: Decimal
) -> PriceSchedule:
    """Rebuilds a schedule from an already validated `pricing` object (as events carry it)."""
    if pricing["kind"] == "tiers":
        tiers = tuple(
            Tier(int(t["min_quantity"]), Decimal(t["unit_price"])) for t in pricing["tiers"]
        )
        return TierSchedule(tiers, floor_price)
    return LinearSchedule(
        list_price=Decimal(pricing["list_price"]),
        from_quantity=int(pricing["from_quantity"]),
        to_quantity=int(pricing["to_quantity"]),
        floor_price=floor_price,
        quantum=quantum,
    )
