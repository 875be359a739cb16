"""`demand`: standing units by maximum price, and how many would pay at least each price."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from analysis.demand_curve import PricePoint, demand_curve, schedule_steps
from analysis.fold import fold
from tests.unit.analysis_history import T3, history
from tests.unit.builders import small_definition


def test_each_maximum_price_counts_its_units_and_everyone_willing_to_pay_it() -> None:
    campaign = fold(history(), until=T3)
    assert campaign is not None

    curve = demand_curve(campaign)

    assert curve.unconditional == 3
    assert curve.points == (
        PricePoint(Decimal("8.00"), 4, 7, Decimal("8.00")),
        PricePoint(Decimal("6.00"), 5, 12, Decimal("6.00")),
    )
    assert (curve.total, curve.clearing_price, curve.filled_quantity) == (12, Decimal("6.00"), 12)


def test_withdrawn_commitments_are_not_demand() -> None:
    campaign = fold(history())
    assert campaign is not None

    curve = demand_curve(campaign)

    assert curve.points == (PricePoint(Decimal("6.00"), 5, 8, Decimal("8.00")),)
    assert (curve.total, curve.clearing_price, curve.filled_quantity) == (8, Decimal("10.00"), 3)


def test_the_json_view_shows_units_at_any_price_apart() -> None:
    campaign = fold(history())
    assert campaign is not None

    view = demand_curve(campaign).to_json_dict()

    assert view["units_at_any_price"] == 3
    assert view["points"] == [
        {"max_unit_price": "6.00", "units": 5, "willing": 8, "schedule_price": "8.00"}
    ]


def test_the_schedule_is_sampled_up_to_the_last_quantity() -> None:
    steps = schedule_steps(small_definition().pricing, 12)

    assert steps[0] == (1, Decimal("10.00"))
    assert steps[-1] == (12, Decimal("6.00"))
    assert len(schedule_steps(small_definition().pricing, 1_000_000)) <= 402


def test_the_chart_is_a_png_of_a_readable_size(tmp_path: Path) -> None:
    from infra.cli.demand_chart import draw

    campaign = fold(history(), until=T3)
    assert campaign is not None
    path = tmp_path / "demand.png"

    draw(demand_curve(campaign), campaign.pricing, path)

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (800, 500)
    assert len(data) > 10_000
