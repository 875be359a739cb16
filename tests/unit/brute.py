"""The contract's clearing price, computed the slow and literal way, to check the fast one."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from domain.pricing import PriceSchedule

Commitments = Sequence[tuple[int, Decimal | None]]


def willing_at(commitments: Commitments, price: Decimal) -> int:
    """Units of buyers willing to pay `price`: unconditional, or limit at or above it."""
    return sum(q for q, limit in commitments if limit is None or limit >= price)


def first_quantity_at(schedule: PriceSchedule, price: Decimal, search_up_to: int) -> int | None:
    """The quantity at which the schedule gives `price`, by counting up from one unit."""
    for quantity in range(1, search_up_to + 1):
        if schedule.price(quantity) == price:
            return quantity
    return None


def brute_force_clearing(schedule: PriceSchedule, commitments: Commitments) -> tuple[Decimal, int]:
    """The lowest schedule price p whose willing quantity reaches the quantity giving p."""
    total = sum(q for q, _ in commitments)
    reachable = []
    for price in schedule.prices():
        needed = first_quantity_at(schedule, price, search_up_to=total)
        if needed is not None and willing_at(commitments, price) >= needed:
            reachable.append(price)
    if not reachable:
        return schedule.price(1), 0
    price = min(reachable)
    return price, willing_at(commitments, price)
