"""Hypothesis strategies for schedules, commitments and campaign definitions."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from itertools import accumulate

from hypothesis import strategies as st

from domain.definition import CampaignDefinition
from domain.pricing import LinearSchedule, PriceSchedule, Tier, TierSchedule
from tests.unit.builders import DEADLINE, DURING

CENT = Decimal("0.01")


def cents(amount: int) -> Decimal:
    return Decimal(amount).scaleb(-2)


@st.composite
def tier_schedules(draw: st.DrawFn) -> TierSchedule:
    floor = draw(st.integers(100, 5_000))
    count = draw(st.integers(1, 5))
    steps = st.lists(st.integers(1, 12), min_size=count - 1, max_size=count - 1)
    starts = accumulate([1, *draw(steps)])
    first = floor + draw(st.integers(-50, 3_000))  # a tier may dip below the floor
    drops = draw(st.lists(st.integers(0, 900), min_size=count - 1, max_size=count - 1))
    prices = [max(first - drop, 1) for drop in accumulate([0, *drops])]
    return TierSchedule(
        tuple(Tier(start, cents(price)) for start, price in zip(starts, prices, strict=True)),
        cents(floor),
    )


@st.composite
def linear_schedules(draw: st.DrawFn) -> LinearSchedule:
    floor = draw(st.integers(100, 5_000))
    start = draw(st.integers(1, 10))
    return LinearSchedule(
        list_price=cents(floor + draw(st.integers(0, 3_000))),
        from_quantity=start,
        to_quantity=start + draw(st.integers(1, 30)),
        floor_price=cents(floor),
        quantum=CENT,
    )


schedules: st.SearchStrategy[PriceSchedule] = st.one_of(tier_schedules(), linear_schedules())


def limits(schedule: PriceSchedule) -> st.SearchStrategy[Decimal | None]:
    """No limit, a schedule price (ties matter), or a price just either side of one."""
    near = st.sampled_from(schedule.prices()).flatmap(
        lambda p: st.sampled_from([p - CENT, p, p + CENT]).filter(lambda x: x > 0)
    )
    return st.one_of(st.none(), near, st.integers(1, 9_000).map(cents))


def commitments(schedule: PriceSchedule) -> st.SearchStrategy[list[tuple[int, Decimal | None]]]:
    return st.lists(st.tuples(st.integers(1, 12), limits(schedule)), max_size=12)


@st.composite
def definitions(draw: st.DrawFn) -> CampaignDefinition:
    schedule = draw(schedules)
    minimum = draw(st.integers(1, 10))
    cap = draw(st.one_of(st.none(), st.integers(minimum, 30)))
    return CampaignDefinition(
        campaign_id="prop",
        sku="SKU",
        title="Property",
        supplier_id="acme",
        currency="EUR",
        pricing=schedule,
        minimum_quantity=minimum,
        maximum_quantity=cap,
        max_per_buyer=draw(st.one_of(st.none(), st.integers(1, 10))),
        deadline=DEADLINE,
        cancellation_cutoff=draw(st.sampled_from([None, timedelta(hours=1), timedelta(days=1)])),
        # Orders come from DURING on: some histories start before the campaign opens.
        opens_at=draw(st.sampled_from([None, DURING + timedelta(minutes=30)])),
    )
