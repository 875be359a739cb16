"""Campaign definitions are validated field by field, and every problem is reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from domain.definition import CampaignDefinition
from domain.errors import CampaignError, DefinitionError
from domain.pricing import LinearSchedule, TierSchedule
from tests.unit.builders import LAPTOP_X1, definition_json


def problems_of(data: Any) -> dict[str, str]:
    with pytest.raises(DefinitionError) as caught:
        CampaignDefinition.from_json_dict(data)
    return {problem.field: problem.message for problem in caught.value.problems}


def test_the_spec_example_is_a_valid_definition() -> None:
    definition = CampaignDefinition.from_json_dict(LAPTOP_X1)
    assert definition.campaign_id == "laptop-x1"
    assert definition.floor_price == Decimal("79.00")
    assert isinstance(definition.pricing, TierSchedule)
    assert definition.pricing.price(1000) == Decimal("79.00")
    assert definition.deadline == datetime(2026, 12, 1, 18, tzinfo=UTC)
    assert definition.cancellation_cutoff == timedelta(hours=1)
    assert definition.maximum_quantity == 5000
    assert definition.max_per_buyer == 5


def test_a_definition_prints_back_as_the_json_it_came_from() -> None:
    assert CampaignDefinition.from_json_dict(LAPTOP_X1).to_json_dict() == {
        **LAPTOP_X1,
        "opens_at": None,
    }


def test_optional_fields_may_be_left_out() -> None:
    data = definition_json(maximum_quantity=None, max_per_buyer=None, cancellation_cutoff=None)
    definition = CampaignDefinition.from_json_dict(data)
    assert definition.maximum_quantity is None
    assert definition.max_per_buyer is None
    assert definition.cancellation_cutoff is None
    assert definition.opens_at is None


def test_a_linear_schedule_is_a_valid_pricing() -> None:
    pricing = {"kind": "linear", "list_price": "120.00", "from_quantity": 10, "to_quantity": 1000}
    definition = CampaignDefinition.from_json_dict(definition_json(pricing=pricing))
    assert isinstance(definition.pricing, LinearSchedule)
    assert definition.pricing.price(1000) == Decimal("79.00")


def test_every_problem_is_reported_at_once_naming_its_field() -> None:
    problems = problems_of(
        definition_json(campaign_id="Laptop X1", currency="EURO", minimum_quantity=0, sku=None)
    )
    assert set(problems) == {"campaign_id", "currency", "minimum_quantity", "sku"}
    assert problems["sku"] == "is required"
    assert "at least 1" in problems["minimum_quantity"]


def test_the_error_message_lists_every_problem() -> None:
    with pytest.raises(CampaignError) as caught:
        CampaignDefinition.from_json_dict(definition_json(sku=None, title=""))
    assert "sku: is required" in str(caught.value)
    assert "title: must be a non-empty string" in str(caught.value)


@pytest.mark.parametrize("slug", ["-laptop", "Laptop", "laptop_x1", "a" * 65, ""])
def test_campaign_and_supplier_ids_must_be_slugs(slug: str) -> None:
    problems = problems_of(definition_json(campaign_id=slug, supplier_id=slug))
    assert {"campaign_id", "supplier_id"} <= set(problems)


@pytest.mark.parametrize("currency", ["XYZ", "eur", "EU", 978])
def test_an_unknown_or_ill_formed_currency_is_refused(currency: Any) -> None:
    assert "currency" in problems_of(definition_json(currency=currency))


def test_money_must_be_a_decimal_string_not_a_json_number() -> None:
    problems = problems_of(definition_json(floor_price=79.0))
    assert "must be a string" in problems["floor_price"]


def test_money_must_fit_the_currency_s_minor_unit() -> None:
    problems = problems_of(definition_json(currency="JPY", floor_price="79.50"))
    assert problems == {"floor_price": "has more than 0 decimals, which JPY does not allow"}


def test_trailing_zero_decimals_are_the_same_amount_in_any_currency() -> None:
    definition = CampaignDefinition.from_json_dict(definition_json(currency="JPY"))
    assert str(definition.floor_price) == "79"


def test_money_must_be_positive() -> None:
    assert "greater than zero" in problems_of(definition_json(floor_price="0.00"))["floor_price"]


def test_the_first_tier_must_start_at_one() -> None:
    pricing = {"kind": "tiers", "tiers": [{"min_quantity": 2, "unit_price": "9.00"}]}
    problems = problems_of(definition_json(pricing=pricing))
    assert "must start at 1" in problems["pricing.tiers[0].min_quantity"]


def test_tier_quantities_must_increase_strictly() -> None:
    tiers = [{"min_quantity": 1, "unit_price": "9.00"}, {"min_quantity": 1, "unit_price": "8.00"}]
    problems = problems_of(definition_json(pricing={"kind": "tiers", "tiers": tiers}))
    assert "must be above" in problems["pricing.tiers[1].min_quantity"]


def test_tier_prices_must_not_increase() -> None:
    tiers = [{"min_quantity": 1, "unit_price": "90.00"}, {"min_quantity": 5, "unit_price": "95.00"}]
    problems = problems_of(definition_json(pricing={"kind": "tiers", "tiers": tiers}))
    assert "must not exceed" in problems["pricing.tiers[1].unit_price"]


def test_tiers_must_be_a_non_empty_list_of_objects() -> None:
    assert "pricing.tiers" in problems_of(definition_json(pricing={"kind": "tiers", "tiers": []}))
    bad_item = {"kind": "tiers", "tiers": ["1:9.00"]}
    assert "pricing.tiers[0]" in problems_of(definition_json(pricing=bad_item))


def test_a_linear_schedule_must_fall_from_a_list_price_above_the_floor() -> None:
    pricing = {"kind": "linear", "list_price": "70.00", "from_quantity": 1, "to_quantity": 5}
    problems = problems_of(definition_json(pricing=pricing))
    assert "at least floor_price" in problems["pricing.list_price"]


def test_a_linear_schedule_must_end_after_it_starts() -> None:
    pricing = {"kind": "linear", "list_price": "90.00", "from_quantity": 5, "to_quantity": 5}
    assert "pricing.to_quantity" in problems_of(definition_json(pricing=pricing))


def test_an_unknown_pricing_kind_is_refused() -> None:
    problems = problems_of(definition_json(pricing={"kind": "auction"}))
    assert problems["pricing.kind"] == 'must be "tiers" or "linear", not \'auction\''


def test_the_stock_cap_cannot_be_below_the_minimum_quantity() -> None:
    problems = problems_of(definition_json(maximum_quantity=50))
    assert "at least minimum_quantity" in problems["maximum_quantity"]


def test_quantities_must_be_whole_numbers() -> None:
    problems = problems_of(definition_json(minimum_quantity="100", max_per_buyer=True))
    assert {"minimum_quantity", "max_per_buyer"} <= set(problems)


def test_the_deadline_must_be_rfc_3339_utc() -> None:
    problems = problems_of(definition_json(deadline="2026-12-01T19:00:00+01:00"))
    assert "UTC" in problems["deadline"]


def test_the_cancellation_cutoff_must_be_an_iso_8601_duration() -> None:
    problems = problems_of(definition_json(cancellation_cutoff="1 hour"))
    assert "PT1H" in problems["cancellation_cutoff"]


def test_opens_at_must_come_before_the_deadline() -> None:
    problems = problems_of(definition_json(opens_at="2026-12-02T00:00:00Z"))
    assert problems["opens_at"] == "must be before the deadline"


def test_unknown_fields_are_refused_because_they_are_usually_typos() -> None:
    problems = problems_of(definition_json(max_per_buyers=5))
    assert problems["max_per_buyers"].startswith("unknown field")


def test_a_definition_must_be_a_json_object() -> None:
    assert problems_of(["laptop-x1"]) == {"definition": "must be a JSON object"}
