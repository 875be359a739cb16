"""Orders: accepted while open, rejected with the contract's reason otherwise, never twice."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from domain.campaign import Campaign
from domain.definition import MAX_QUANTITY
from domain.outcomes import CloseReason, Order, Reason, Verdict
from tests.unit.builders import DEADLINE, DURING, OPENED_AT, open_campaign, order


def test_an_order_while_open_is_accepted_with_the_live_figures() -> None:
    campaign = open_campaign()
    outcome = campaign.place_order(order(2), DURING)
    assert outcome.verdict is Verdict.ACCEPTED
    assert outcome.reason is None
    assert outcome.unit_price == Decimal("10.00")
    assert outcome.committed_quantity == 2
    assert not outcome.duplicate


def test_an_accepted_order_records_a_commitment_placed_event() -> None:
    campaign = open_campaign()
    campaign.place_order(order(2, max_price="9.00", order_id="site-a:1"), DURING)
    [placed] = campaign.collect_events()
    assert isinstance(placed, Campaign.CommitmentPlaced)
    assert placed.order_id == "site-a:1"
    assert placed.max_unit_price == Decimal("9.00")
    assert placed.unit_price == Decimal("10.00")
    assert placed.committed_quantity == 2
    assert placed.timestamp == DURING


def test_price_drops_when_volume_reaches_next_tier() -> None:
    campaign = open_campaign()
    assert campaign.place_order(order(4), DURING).unit_price == Decimal("10.00")
    assert campaign.place_order(order(1), DURING).unit_price == Decimal("8.00")
    assert campaign.unit_price == Decimal("8.00")


def test_a_conditional_order_counts_only_where_its_buyer_accepts_the_price() -> None:
    campaign = open_campaign()
    campaign.place_order(order(4), DURING)
    # One more unit would reach 8.00, but this buyer pays at most 7.00.
    outcome = campaign.place_order(order(1, max_price="7.00"), DURING)
    assert outcome.unit_price == Decimal("10.00")
    assert campaign.place_order(order(1, max_price="8.00"), DURING).unit_price == Decimal("8.00")


def test_the_same_order_id_placed_twice_is_one_commitment() -> None:
    campaign = open_campaign()
    first = campaign.place_order(order(2, order_id="site-a:7"), DURING)
    campaign.collect_events()
    again = campaign.place_order(order(2, order_id="site-a:7"), DURING)
    assert campaign.collect_events() == []
    assert again.duplicate
    assert again.verdict is first.verdict
    assert campaign.committed_quantity == 2


def test_a_repeated_rejected_order_repeats_its_reason_without_a_new_event() -> None:
    campaign = open_campaign()  # at most 6 units a buyer
    campaign.place_order(order(7, order_id="site-a:8", buyer="b-1"), DURING)
    campaign.collect_events()
    again = campaign.place_order(order(7, order_id="site-a:8", buyer="b-1"), DURING)
    assert (again.verdict, again.reason, again.duplicate) == (
        Verdict.REJECTED,
        Reason.PER_BUYER_LIMIT,
        True,
    )
    assert campaign.collect_events() == []


def test_a_repeated_order_reports_the_live_figures_not_the_first_ones() -> None:
    campaign = open_campaign()
    campaign.place_order(order(1, order_id="site-a:9"), DURING)
    campaign.place_order(order(4), DURING)
    again = campaign.place_order(order(1, order_id="site-a:9"), DURING)
    assert (again.unit_price, again.committed_quantity) == (Decimal("8.00"), 5)


def test_a_rejected_order_is_recorded_with_its_reason_and_the_live_figures() -> None:
    campaign = open_campaign()
    campaign.place_order(order(3), DURING)
    campaign.collect_events()
    campaign.place_order(order(7, order_id="site-a:99", buyer="b-1"), DURING)
    [rejected] = campaign.collect_events()
    assert isinstance(rejected, Campaign.OrderRejected)
    assert rejected.reason == "per_buyer_limit"
    assert rejected.order_id == "site-a:99"
    assert (rejected.unit_price, rejected.committed_quantity) == (Decimal("10.00"), 3)


def test_an_order_beyond_the_per_buyer_limit_is_rejected() -> None:
    campaign = open_campaign(max_per_buyer=3)
    assert campaign.place_order(order(2, buyer="b-1"), DURING).accepted
    outcome = campaign.place_order(order(2, buyer="b-1"), DURING)
    assert outcome.reason is Reason.PER_BUYER_LIMIT
    assert campaign.place_order(order(1, buyer="b-1"), DURING).accepted


def test_the_per_buyer_limit_counts_one_buyer_per_site() -> None:
    campaign = open_campaign(max_per_buyer=3)
    campaign.place_order(order(3, buyer="b-1", site="site-a"), DURING)
    assert campaign.place_order(order(3, buyer="b-1", site="site-b"), DURING).accepted


def test_a_withdrawn_commitment_frees_the_buyer_s_allowance() -> None:
    campaign = open_campaign(max_per_buyer=3)
    first = order(3, buyer="b-1")
    campaign.place_order(first, DURING)
    campaign.cancel_order(first.order_id, first.site_id, DURING)
    assert campaign.place_order(order(3, buyer="b-1"), DURING).accepted


def test_an_order_larger_than_the_remaining_stock_is_rejected() -> None:
    campaign = open_campaign(maximum_quantity=10)
    campaign.place_order(order(6), DURING)
    outcome = campaign.place_order(order(5), DURING)
    assert outcome.reason is Reason.EXCEEDS_STOCK
    assert campaign.committed_quantity == 6


def test_reaching_the_stock_cap_closes_the_campaign_at_once_as_sold_out() -> None:
    campaign = open_campaign(maximum_quantity=10)
    campaign.place_order(order(6), DURING)
    outcome = campaign.place_order(order(4), DURING)
    assert outcome.accepted
    assert outcome.unit_price == Decimal("6.00")
    assert outcome.committed_quantity == 10
    placed, closed = campaign.collect_events()[-2:]
    assert isinstance(placed, Campaign.CommitmentPlaced)
    assert isinstance(closed, Campaign.Closed)
    assert (closed.reason, closed.outcome, closed.closed_at) == ("sold_out", "succeeded", DURING)


def test_an_order_after_a_sold_out_close_is_rejected_as_sold_out() -> None:
    campaign = open_campaign(maximum_quantity=10)
    campaign.place_order(order(6), DURING)
    campaign.place_order(order(4), DURING)
    assert campaign.place_order(order(1), DURING).reason is Reason.SOLD_OUT


def test_an_order_after_any_other_close_is_rejected_as_campaign_closed() -> None:
    campaign = open_campaign()
    campaign.cancel(DURING)
    assert campaign.place_order(order(1), DURING).reason is Reason.CAMPAIGN_CLOSED


def test_an_order_at_the_deadline_is_rejected_even_before_the_clock_closes() -> None:
    campaign = open_campaign()
    assert campaign.place_order(order(1), DEADLINE).reason is Reason.CAMPAIGN_CLOSED
    assert campaign.closing is None


def test_an_order_just_before_the_deadline_is_accepted() -> None:
    campaign = open_campaign()
    assert campaign.place_order(order(1), DEADLINE - timedelta(microseconds=1)).accepted


def test_an_order_before_opens_at_is_rejected_as_not_open() -> None:
    campaign = open_campaign(opens_at="2026-11-28T00:00:00Z")
    assert campaign.place_order(order(1), DURING).reason is Reason.NOT_OPEN
    later = OPENED_AT + timedelta(days=1, hours=1)
    assert campaign.place_order(order(1), later).accepted


def test_an_order_that_reached_kafka_before_the_campaign_opened_is_rejected_as_not_open() -> None:
    campaign = open_campaign()
    early = campaign.place_order(order(1), OPENED_AT - timedelta(seconds=1))
    assert early.reason is Reason.NOT_OPEN
    assert campaign.place_order(order(1), OPENED_AT).accepted


@pytest.mark.parametrize(
    "bad",
    [
        Order("site-a:1", "site-a", "b-1", 0),
        Order("site-a:1", "site-a", "b-1", -3),
        Order("site-a:1", "site-a", "b-1", 1_000_001),
        Order("site-a:1", "site-a", "b-1", 1, Decimal("0")),
        Order("site-a:1", "site-a", "b-1", 1, Decimal("-5.00")),
        Order("site-a:1", "site-a", "b-1", 1, Decimal("9.999")),
        Order("site-a:1", "site-a", "b-1", 1, Decimal("NaN")),
        Order("", "site-a", "b-1", 1),
        Order("site-a:1", "", "b-1", 1),
        Order("site-a:1", "site-a", "", 1),
        Order("s" * 129, "site-a", "b-1", 1),
        Order("site-a:1", "site-a", "b" * 129, 1),
        Order("site-a:1\x00", "site-a", "b-1", 1),
        Order("site-a:1", "site-a", "b-1\n", 1),
        Order("site-a:1", "site-a", "b-\x85", 1),
        Order("site-a:1", "site-a", "b-\x7f", 1),
        Order("site-a:\ud800", "site-a", "b-1", 1),
        Order("site-a:1", "Site A", "b-1", 1),
        Order("site-a:1", "-site-a", "b-1", 1),
    ],
)
def test_an_order_that_makes_no_sense_is_rejected_as_invalid(bad: Order) -> None:
    assert open_campaign().place_order(bad, DURING).reason is Reason.INVALID


def test_ids_up_to_the_contract_s_limits_are_accepted() -> None:
    campaign = open_campaign()
    longest = Order("o" * 128, "s" * 64, "b-ü€" + "b" * 124, 1)
    assert campaign.place_order(longest, DURING).accepted


def test_an_invalid_order_records_nothing_and_is_answered_with_the_live_figures() -> None:
    campaign = open_campaign()
    campaign.place_order(order(4), DURING)
    campaign.collect_events()
    version = campaign.version
    outcome = campaign.place_order(order(0), DURING)
    assert campaign.collect_events() == []
    assert campaign.version == version
    assert (outcome.verdict, outcome.reason) == (Verdict.REJECTED, Reason.INVALID)
    assert (outcome.unit_price, outcome.committed_quantity) == (Decimal("10.00"), 4)
    assert not outcome.recorded
    assert not outcome.duplicate


def test_an_invalid_order_does_not_hold_its_id_against_the_corrected_order() -> None:
    campaign = open_campaign()
    campaign.place_order(order(0, order_id="site-a:2002"), DURING)
    corrected = campaign.place_order(order(2, order_id="site-a:2002"), DURING)
    assert corrected.accepted
    assert not corrected.duplicate
    assert campaign.committed_quantity == 2


def test_a_repeat_of_an_invalid_order_is_invalid_again() -> None:
    campaign = open_campaign()
    bad = order(0)
    first, again = campaign.place_order(bad, DURING), campaign.place_order(bad, DURING)
    assert first == again
    assert again.reason is Reason.INVALID


def test_an_invalid_order_reusing_an_accepted_order_s_id_is_invalid_not_a_repeat() -> None:
    campaign = open_campaign()
    campaign.place_order(order(2, order_id="site-a:5"), DURING)
    outcome = campaign.place_order(order(0, order_id="site-a:5"), DURING)
    assert (outcome.reason, outcome.duplicate) == (Reason.INVALID, False)
    assert campaign.committed_quantity == 2


def test_an_order_too_early_does_not_hold_its_id_once_the_campaign_opens() -> None:
    campaign = open_campaign(opens_at="2026-11-28T00:00:00Z")
    early = order(1)
    assert campaign.place_order(early, DURING).reason is Reason.NOT_OPEN
    [rejected] = campaign.collect_events()
    assert isinstance(rejected, Campaign.OrderRejected)  # still answered by an event
    later = campaign.place_order(early, OPENED_AT + timedelta(days=1, hours=1))
    assert later.accepted
    assert not later.duplicate
    assert campaign.committed_quantity == 1


def test_a_rejection_over_the_buyer_s_limit_holds_even_once_the_allowance_is_freed() -> None:
    campaign = open_campaign(max_per_buyer=3)
    held = order(3, buyer="b-1")
    campaign.place_order(held, DURING)
    refused = order(1, buyer="b-1")
    assert campaign.place_order(refused, DURING).reason is Reason.PER_BUYER_LIMIT
    campaign.cancel_order(held.order_id, held.site_id, DURING)
    again = campaign.place_order(refused, DURING)
    assert (again.reason, again.duplicate) == (Reason.PER_BUYER_LIMIT, True)
    assert campaign.committed_quantity == 0


def test_a_rejection_over_the_stock_holds_even_once_stock_is_freed() -> None:
    campaign = open_campaign(maximum_quantity=10)
    held = order(6)
    campaign.place_order(held, DURING)
    refused = order(5)
    assert campaign.place_order(refused, DURING).reason is Reason.EXCEEDS_STOCK
    campaign.cancel_order(held.order_id, held.site_id, DURING)
    again = campaign.place_order(refused, DURING)
    assert (again.reason, again.duplicate) == (Reason.EXCEEDS_STOCK, True)


@pytest.mark.parametrize("reason", [Reason.CAMPAIGN_CLOSED, Reason.SOLD_OUT])
def test_a_rejection_by_a_closed_campaign_is_repeated_for_the_same_order(reason: Reason) -> None:
    campaign = open_campaign(maximum_quantity=10)
    if reason is Reason.SOLD_OUT:
        campaign.place_order(order(6), DURING)
        campaign.place_order(order(4), DURING)
    else:
        campaign.cancel(DURING)
    late = order(1)
    assert campaign.place_order(late, DURING).reason is reason
    campaign.collect_events()
    again = campaign.place_order(late, DURING)
    assert (again.reason, again.duplicate) == (reason, True)
    assert campaign.collect_events() == []


def test_a_campaign_without_a_stock_cap_commits_at_most_a_billion_units() -> None:
    campaign = open_campaign(maximum_quantity=None, max_per_buyer=None)
    for _ in range(1000):
        assert campaign.place_order(order(1_000_000), DURING).accepted
    assert campaign.committed_quantity == MAX_QUANTITY
    outcome = campaign.place_order(order(1), DURING)
    assert outcome.reason is Reason.EXCEEDS_STOCK
    assert campaign.committed_quantity == MAX_QUANTITY
    assert campaign.closing is None  # no cap, so no sell-out: it runs to its deadline


def test_an_invalid_order_is_invalid_even_after_close() -> None:
    campaign = open_campaign()
    campaign.cancel(DURING)
    assert campaign.place_order(order(0), DURING).reason is Reason.INVALID


def test_a_max_unit_price_is_kept_in_the_currency_s_minor_unit() -> None:
    campaign = open_campaign()
    campaign.place_order(order(1, max_price="9"), DURING)
    [placed] = campaign.collect_events()
    assert isinstance(placed, Campaign.CommitmentPlaced)
    assert str(placed.max_unit_price) == "9.00"


def test_a_sold_out_close_fills_only_the_buyers_willing_to_pay() -> None:
    campaign = open_campaign(maximum_quantity=10, minimum_quantity=1, max_per_buyer=None)
    campaign.place_order(order(4, site="site-a"), DURING)
    campaign.place_order(order(1, max_price="9.00", site="site-b"), DURING)
    campaign.place_order(order(5, max_price="5.00", site="site-c"), DURING)
    assert campaign.closing is not None
    assert campaign.closing.reason is CloseReason.SOLD_OUT
    # Ten units would give 6.00, which site-c's buyer refuses; five units give 8.00.
    assert campaign.closing.unit_price == Decimal("8.00")
    assert campaign.closing.filled_quantity == 5
    assert campaign.closing.lines == {"site-a": 4, "site-b": 1}
