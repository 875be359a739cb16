"""`whatif`: the real commands, at their real times, decided again under another definition."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.whatif import alternative, compare, replay_under, result_of
from domain.campaign import Campaign
from domain.definition import CampaignDefinition
from domain.errors import CampaignError, DefinitionError
from domain.outcomes import Order
from tests.unit.analysis_history import T2, history
from tests.unit.builders import DEADLINE, OPENED_AT, order, small_definition
from tests.unit.strategies import definitions, limits

AFTER = DEADLINE + timedelta(days=1)  # "now", once everything is over
BEFORE = DEADLINE - timedelta(seconds=1)


def tiers(*steps: tuple[int, str]) -> dict[str, Any]:
    return {
        "kind": "tiers",
        "tiers": [{"min_quantity": q, "unit_price": p} for q, p in steps],
    }


def test_the_campaigns_own_schedule_reproduces_every_event_exactly() -> None:
    events = history()

    replayed = replay_under(events, small_definition(), AFTER)

    assert list(replayed.collect_events()) == events


def test_the_real_column_is_the_recorded_close() -> None:
    comparison = compare(history(), {"minimum_quantity": 5}, AFTER)

    real = comparison.real
    assert (real.outcome, real.reason, real.unit_price, real.filled_quantity) == (
        "failed",
        "deadline",
        Decimal("10.00"),
        3,
    )
    assert (real.revenue, real.buyers_filled, real.buyers_released) == (Decimal("0.00"), 0, 2)
    assert comparison.whatif == real
    assert comparison.changes == {}


def test_a_schedule_reaching_its_low_price_sooner_lets_the_campaign_succeed() -> None:
    # 3 units at any price and 5 up to 6.00 stand at the close: 8 units reach 6.00.
    comparison = compare(history(), tiers((1, "10.00"), (3, "7.00"), (8, "6.00")), AFTER)

    whatif = comparison.whatif
    assert (whatif.outcome, whatif.unit_price, whatif.filled_quantity) == (
        "succeeded",
        Decimal("6.00"),
        8,
    )
    assert (whatif.revenue, whatif.buyers_filled, whatif.buyers_released) == (
        Decimal("48.00"),
        2,
        0,
    )
    assert set(comparison.changes) == {"pricing"}


def test_a_lower_minimum_lets_the_unconditional_buyer_be_filled_alone() -> None:
    whatif = compare(history(), {"minimum_quantity": 3}, AFTER).whatif

    assert (whatif.outcome, whatif.unit_price, whatif.revenue) == (
        "succeeded",
        Decimal("10.00"),
        Decimal("30.00"),
    )
    assert (whatif.buyers_filled, whatif.buyers_released) == (1, 1)


def test_a_smaller_cap_sells_out_early_and_turns_later_orders_away() -> None:
    whatif = compare(history(), {"maximum_quantity": 7}, AFTER).whatif

    assert (whatif.outcome, whatif.reason, whatif.closed_at) == ("succeeded", "sold_out", T2)
    assert (whatif.unit_price, whatif.filled_quantity, whatif.revenue) == (
        Decimal("8.00"),
        7,
        Decimal("56.00"),
    )


def sold_out_history() -> list[Any]:
    """Cap 5: 3 units, then 4 refused (exceeds_stock), then 2 that sell it out."""
    campaign = Campaign.open(small_definition(maximum_quantity=5), OPENED_AT)
    campaign.place_order(order(3, buyer="b1"), OPENED_AT + timedelta(hours=1))
    campaign.place_order(order(4, buyer="b2"), OPENED_AT + timedelta(hours=2))
    campaign.place_order(order(2, buyer="b3"), OPENED_AT + timedelta(hours=3))
    assert campaign.closing is not None
    return list(campaign.collect_events())


def test_without_the_cap_the_refused_order_is_accepted_and_it_runs_to_its_deadline() -> None:
    comparison = compare(sold_out_history(), {"maximum_quantity": None}, AFTER)

    assert (comparison.real.reason, comparison.real.filled_quantity) == ("sold_out", 5)
    whatif = comparison.whatif
    assert (whatif.reason, whatif.closed_at, whatif.filled_quantity) == ("deadline", DEADLINE, 9)
    assert (whatif.unit_price, whatif.revenue) == (Decimal("8.00"), Decimal("72.00"))


def test_before_the_deadline_a_campaign_that_did_not_sell_out_is_still_open() -> None:
    whatif = compare(sold_out_history(), {"maximum_quantity": None}, BEFORE).whatif

    assert (whatif.outcome, whatif.filled_quantity, whatif.revenue) == ("open", 9, None)


def test_a_bare_price_schedule_is_the_pricing_field() -> None:
    changed = alternative(small_definition(), tiers((1, "9.00")))

    assert changed.pricing.price(100) == Decimal("9.00")
    assert changed.minimum_quantity == small_definition().minimum_quantity


def test_a_field_that_cannot_change_is_named() -> None:
    with pytest.raises(DefinitionError) as raised:
        alternative(small_definition(), {"deadline": "2027-01-01T00:00:00Z"})

    assert [p.field for p in raised.value.problems] == ["deadline"]


def test_a_wrong_tier_is_named_by_its_path() -> None:
    with pytest.raises(DefinitionError) as raised:
        alternative(small_definition(), tiers((1, "9.00"), (5, "9.50")))

    assert [p.field for p in raised.value.problems] == ["pricing.tiers[1].unit_price"]


def test_a_cap_below_the_minimum_is_refused() -> None:
    with pytest.raises(DefinitionError) as raised:
        alternative(small_definition(), {"maximum_quantity": 2})

    assert [p.field for p in raised.value.problems] == ["maximum_quantity"]


@st.composite
def histories(draw: st.DrawFn) -> tuple[CampaignDefinition, list[Any]]:
    """Orders, cancellations, an extension and a cancel or close, at random later times."""
    definition = draw(definitions())
    campaign = Campaign.open(definition, OPENED_AT)
    now = OPENED_AT
    placed: list[str] = []
    for _ in range(draw(st.integers(0, 25))):
        now += timedelta(minutes=draw(st.integers(0, 600)))
        action = draw(st.sampled_from(["place", "place", "place", "cancel", "extend", "stop"]))
        try:
            if action == "place":
                quantity = draw(st.integers(1, 8))
                buyer = draw(st.sampled_from(["b1", "b2", "b3", "b4"]))
                limit = draw(limits(definition.pricing))
                made = Order(f"site-a:{len(placed)}", "site-a", buyer, quantity, limit)
                campaign.place_order(made, now)
                placed.append(made.order_id)
            elif action == "cancel" and placed:
                campaign.cancel_order(draw(st.sampled_from(placed)), "site-a", now)
            elif action == "extend":
                campaign.extend_deadline(campaign.deadline + timedelta(hours=2), now)
            elif action == "stop":
                campaign.cancel(now)
        except CampaignError:
            pass  # an operator command refused: nothing recorded
        campaign.close_if_due(now)
    return definition, list(campaign.collect_events())


@settings(max_examples=150, deadline=None)
@given(histories())
def test_any_history_replayed_under_its_own_definition_is_the_same_history(
    case: tuple[CampaignDefinition, list[Any]],
) -> None:
    definition, events = case

    replayed = replay_under(events, definition, AFTER)

    assert list(replayed.collect_events()) == events
    assert compare(events, {"minimum_quantity": definition.minimum_quantity}, AFTER).whatif == (
        result_of(replayed)
    )
