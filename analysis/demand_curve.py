"""The demand curve: units committed at each maximum price, and how many would pay at least it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain.campaign import Campaign
from domain.clearing import clear
from domain.pricing import PriceSchedule
from projections.wire import jsonable


@dataclass(frozen=True)
class PricePoint:
    """`units` committed with this maximum price; `willing` units accept paying it.

    `willing` counts unconditional units and every commitment with a maximum at or above
    `max_unit_price`; `schedule_price` is what the schedule gives for that many units,
    so the group reaches this price when `schedule_price <= max_unit_price`.
    """

    max_unit_price: Decimal
    units: int
    willing: int
    schedule_price: Decimal


@dataclass(frozen=True)
class DemandCurve:
    """A campaign's standing commitments (withdrawn ones left out), by maximum price."""

    campaign_id: str
    currency: str
    unconditional: int
    points: tuple[PricePoint, ...]
    clearing_price: Decimal
    filled_quantity: int

    @property
    def total(self) -> int:
        return self.unconditional + sum(point.units for point in self.points)

    def to_json_dict(self) -> dict[str, Any]:
        view: dict[str, Any] = jsonable(
            {
                "campaign_id": self.campaign_id,
                "currency": self.currency,
                "units_at_any_price": self.unconditional,
                "total_units": self.total,
                "clearing_price": self.clearing_price,
                "filled_quantity": self.filled_quantity,
                "points": [vars_of(point) for point in self.points],
            }
        )
        return view


def vars_of(point: PricePoint) -> dict[str, Any]:
    return {
        "max_unit_price": point.max_unit_price,
        "units": point.units,
        "willing": point.willing,
        "schedule_price": point.schedule_price,
    }


def demand_curve(campaign: Campaign) -> DemandCurve:
    """The curve from the campaign's demand, highest maximum price first."""
    demand = campaign.demand
    points: list[PricePoint] = []
    willing = demand.unconditional
    for limit in sorted(demand.conditional, reverse=True):
        willing += demand.conditional[limit]
        price = campaign.pricing.price(max(willing, 1))
        points.append(PricePoint(limit, demand.conditional[limit], willing, price))
    clearing = clear(campaign.pricing, demand)
    return DemandCurve(
        campaign_id=campaign.campaign_id,
        currency=campaign.definition.currency,
        unconditional=demand.unconditional,
        points=tuple(points),
        clearing_price=clearing.unit_price,
        filled_quantity=clearing.filled_quantity,
    )


def schedule_steps(
    schedule: PriceSchedule, up_to: int, samples: int = 400
) -> list[tuple[int, Decimal]]:
    """(quantity, price) along the schedule from 1 to `up_to` units, for drawing it."""
    stride = max(up_to // samples, 1)
    quantities = sorted({*range(1, up_to + 1, stride), up_to})
    return [(quantity, schedule.price(quantity)) for quantity in quantities]
