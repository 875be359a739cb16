"""The read model's "next price" says which price comes next and how many units it takes."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.pricing import LinearSchedule, Tier, TierSchedule
from projections.next_price import next_step

TIERS = TierSchedule(
    (Tier(1, Decimal("120")), Tier(100, Decimal("99")), Tier(500, Decimal("85"))),
    floor_price=Decimal("79"),
)
LINEAR = LinearSchedule(Decimal("100.00"), 10, 110, Decimal("50.00"), Decimal("0.01"))


def test_next_tier_is_named_with_the_units_missing() -> None:
    assert next_step(TIERS, 0) == (Decimal("99"), 100)
    assert next_step(TIERS, 98) == (Decimal("99"), 2)
    assert next_step(TIERS, 100) == (Decimal("85"), 400)


def test_there_is_no_next_price_at_the_last_tier() -> None:
    assert next_step(TIERS, 500) is None
    assert next_step(TIERS, 10_000) is None


def test_a_linear_schedule_drops_one_unit_later() -> None:
    assert next_step(LINEAR, 10) == (Decimal("99.50"), 1)
    assert next_step(LINEAR, 110) is None


@given(st.integers(min_value=0, max_value=200))
def test_the_next_price_is_the_first_lower_price_reached(quantity: int) -> None:
    step = next_step(LINEAR, quantity)
    current = LINEAR.price(max(quantity, 1))
    if step is None:
        assert LINEAR.price(10_000) == current
        return
    price, missing = step
    assert price < current
    assert LINEAR.price(quantity + missing) == price
    assert all(LINEAR.price(q) == current for q in range(max(quantity, 1), quantity + missing))
