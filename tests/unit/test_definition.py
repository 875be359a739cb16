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


@pytest.mark.parametrize("field", ["title", "sku"])
@pytest.mark.parametrize(
    "text", ["X1\x00", "X1\nlaptop", "X1\tlaptop", "X1\x7f", "X1\x9b", "X\ud800"]
)
def test_titles_and_skus_refuse_control_characters_and_lone_surrogates(
    field: str, text: str
) -> None:
    problems = problems_of(definition_json(**{field: text}))
    assert "control characters" in problems[field]


@pytest.mark.parametrize("field", ["title", "sku"])
def test_titles_and_skus_are_at_most_200_characters(field: str) -> None:
    assert "at most 200" in problems_of(definition_json(**{field: "é" * 201}))[field]
    definition = CampaignDefinition.from_json_dict(definition_json(**{field: "é€" * 100}))
    assert getattr(definition, field) == "é€" * 100


@pytest.mark.parametrize("field", ["minimum_quantity", "maximum_quantity", "max_per_buyer"])
def test_quantities_are_at_most_a_billion(field: str) -> None:
    others = {"minimum_quantity": 1, "maximum_quantity": None}
    changes = others | {field: 1_000_000_001}
    assert problems_of(definition_json(**changes)) == {field: "must be at most 1,000,000,000"}
    fine = others | {field: 1_000_000_000}
    assert getattr(CampaignDefinition.from_json_dict(definition_json(**fine)), field) == 10**9


def test_schedule_quantities_are_at_most_a_billion() -> None:
    tiers = [
        {"min_quantity": 1, "unit_price": "90.00"},
        {"min_quantity": 2**31, "unit_price": "80.00"},
    ]
    problems = problems_of(definition_json(pricing={"kind": "tiers", "tiers": tiers}))
    assert "at most 1,000,000,000" in problems["pricing.tiers[1].min_quantity"]
    linear = {"kind": "linear", "list_price": "90.00", "from_quantity": 1, "to_quantity": 10**12}
    assert "at most" in problems_of(definition_json(pricing=linear))["pricing.to_quantity"]


@pytest.mark.parametrize("cutoff", ["P200000W", "P999999W", "P999999D", "PT999999H"])
def test_a_cutoff_longer_than_any_campaign_is_refused_naming_the_field(cutoff: str) -> None:
    problems = problems_of(definition_json(cancellation_cutoff=cutoff))
    assert set(problems) == {"cancellation_cutoff"}
    assert "must be shorter than" in problems["cancellation_cutoff"]


def test_the_cutoff_must_be_shorter_than_the_time_from_opens_at_to_the_deadline() -> None:
    opens_at = "2026-12-01T17:00:00Z"  # an hour before the deadline
    problems = problems_of(definition_json(opens_at=opens_at, cancellation_cutoff="PT1H"))
    assert problems == {
        "cancellation_cutoff": "must be shorter than the PT1H from opens_at to the deadline"
    }
    shorter = definition_json(opens_at=opens_at, cancellation_cutoff="PT59M59S")
    assert CampaignDefinition.from_json_dict(shorter).cancellation_cutoff == timedelta(
        minutes=59, seconds=59
    )


def test_the_longest_cutoff_allowed_is_stored_and_read_back() -> None:
    data = definition_json(deadline="2999-12-31T23:59:59Z", cancellation_cutoff="P52000W")
    definition = CampaignDefinition.from_json_dict(data)
    assert definition.cancellation_cutoff == timedelta(weeks=52_000)
    fields = definition.to_event_fields()
    assert fields["cancellation_cutoff"] == "P364000D"
    assert CampaignDefinition.from_event_fields(fields) == definition


@pytest.mark.parametrize(
    "instant", ["1999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "3000-01-01T00:00:00Z"]
)
@pytest.mark.parametrize("field", ["deadline", "opens_at"])
def test_the_deadline_and_opens_at_lie_between_2000_and_2999(field: str, instant: str) -> None:
    changes = {field: instant} | (
        {"deadline": "2999-12-31T23:59:59Z"} if field == "opens_at" else {}
    )
    problems = problems_of(definition_json(**changes))
    assert problems[field].startswith("must be between 2000-01-01 and 2999-12-31")


def test_the_last_instant_of_2999_is_a_valid_deadline() -> None:
    data = definition_json(deadline="2999-12-31T23:59:59.999999Z", opens_at="2000-01-01T00:00:00Z")
    definition = CampaignDefinition.from_json_dict(data)
    assert definition.deadline.year == 2999
