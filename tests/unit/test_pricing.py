"""Both price schedules: tiers and linear, never below the floor."""

from __future__ import annotations

from decimal import Decimal

from domain.pricing import LinearSchedule, Tier, TierSchedule

TIERS = TierSchedule(
    (Tier(1, Decimal("120.00")), Tier(100, Decimal("99.00")), Tier(500, Decimal("85.00"))),
    floor_price=Decimal("79.00"),
)
LINEAR = LinearSchedule(
    list_price=Decimal("100.00"),
    from_quantity=10,
    to_quantity=13,
    floor_price=Decimal("90.00"),
    quantum=Decimal("0.01"),
)


def test_price_is_the_first_tier_s_below_the_second_tier() -> None:
    assert TIERS.price(1) == Decimal("120.00")
    assert TIERS.price(99) == Decimal("120.00")


def test_price_drops_when_volume_reaches_next_tier() -> None:
    assert TIERS.price(100) == Decimal("99.00")
    assert TIERS.price(499) == Decimal("99.00")
    assert TIERS.price(500) == Decimal("85.00")
    assert TIERS.price(10**6) == Decimal("85.00")


def test_a_tier_below_the_floor_is_priced_at_the_floor() -> None:
    cheap = TierSchedule((Tier(1, Decimal("10.00")), Tier(5, Decimal("3.00"))), Decimal("4.00"))
    assert cheap.price(5) == Decimal("4.00")
    assert cheap.prices() == [Decimal("10.00"), Decimal("4.00")]


def test_linear_price_holds_the_list_price_up_to_from_quantity() -> None:
    assert LINEAR.price(1) == Decimal("100.00")
    assert LINEAR.price(10) == Decimal("100.00")


def test_linear_price_falls_evenly_and_is_rounded_to_the_minor_unit() -> None:
    # 100 - 10 * 1/3 = 96.666..., 100 - 10 * 2/3 = 93.333...
    assert LINEAR.price(11) == Decimal("96.67")
    assert LINEAR.price(12) == Decimal("93.33")


def test_linear_price_reaches_the_floor_at_to_quantity_and_stays_there() -> None:
    assert LINEAR.price(13) == Decimal("90.00")
    assert LINEAR.price(10_000) == Decimal("90.00")


def test_linear_rounding_follows_the_currency_s_minor_unit() -> None:
    yen = LinearSchedule(Decimal("1000"), 1, 4, Decimal("900"), quantum=Decimal("1"))
    assert yen.price(2) == Decimal("967")
    assert yen.prices() == [Decimal("1000"), Decimal("967"), Decimal("933"), Decimal("900")]


def test_schedules_describe_themselves_as_the_definition_writes_pricing() -> None:
    assert TIERS.to_dict()["tiers"][1] == {"min_quantity": 100, "unit_price": Decimal("99.00")}
    assert LINEAR.to_dict() == {
        "kind": "linear",
        "list_price": Decimal("100.00"),
        "from_quantity": 10,
        "to_quantity": 13,
    }
