"""The next lower price a campaign can reach, and how many more units it takes."""

from __future__ import annotations

from decimal import Decimal

from domain.pricing import LinearSchedule, PriceSchedule


def next_step(schedule: PriceSchedule, quantity: int) -> tuple[Decimal, int] | None:
    """(next price, units still needed) from `quantity` filled units; None at the floor."""
    current = schedule.price(max(quantity, 1))
    high = _last_change(schedule)
    if high <= quantity or schedule.price(high) >= current:
        return None
    low = max(quantity, 1)  # price(low) == current > price(high): bisect for the first drop
    while high - low > 1:
        middle = (low + high) // 2
        if schedule.price(middle) < current:
            high = middle
        else:
            low = middle
    return schedule.price(high), high - quantity


def _last_change(schedule: PriceSchedule) -> int:
    """A quantity from which the price no longer falls."""
    if isinstance(schedule, LinearSchedule):
        return schedule.to_quantity
    return max(tier.min_quantity for tier in schedule.tiers)
