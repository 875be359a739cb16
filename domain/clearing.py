"""The clearing price: the lowest schedule price the willing quantity reaches."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from domain.demand import Demand
from domain.pricing import PriceSchedule


@dataclass(frozen=True, slots=True)
class Clearing:
    """The unit price every filled commitment pays, and how many units are filled."""

    unit_price: Decimal
    filled_quantity: int


def clear(schedule: PriceSchedule, demand: Demand) -> Clearing:
    """Clears in O(distinct max prices) rather than over every schedule price.

    Walking the max prices downwards, the willing quantity W_k grows; the schedule price
    at W_k is reachable when level k still accepts it. The lowest such price is the
    lowest schedule price p whose willing quantity reaches the quantity that gives p.
    """
    willing = demand.unconditional
    best = schedule.price(willing) if willing >= 1 else None
    for limit, quantity in sorted(demand.conditional.items(), reverse=True):
        willing += quantity
        price = schedule.price(willing)
        if price <= limit and (best is None or price < best):
            best = price
    if best is None:
        return Clearing(schedule.price(1), 0)
    return Clearing(best, demand.willing_at(best))
