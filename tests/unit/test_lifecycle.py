"""Opening, extending, cancelling and closing a campaign: closing happens exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from domain.campaign import Campaign
from domain.errors import CampaignClosedError, ClockError, DeadlineNotLaterError, DefinitionError
from domain.outcomes import CloseOutcome, CloseReason
from tests.unit.builders import (
    DEADLINE,
    DURING,
    OPENED_AT,
    open_campaign,
    order,
    small_definition,
)


def test_a_campaign_id_maps_to_the_same_aggregate_id_every_time() -> None:
    assert Campaign.create_id("laptop-x1") == Campaign.create_id("laptop-x1")
    assert Campaign.create_id("laptop-x1") != Campaign.create_id("laptop-x2")
    assert Campaign.create_id("laptop-x1") == UUID("ab00ad33-9414-531b-93a8-2fcb6f6b39ed")
    assert open_campaign(campaign_id="laptop-x1").id == Campaign.create_id("laptop-x1")


def test_opening_records_the_definition_in_an_opened_event() -> None:
    campaign = Campaign.open(small_definition(), OPENED_AT)
    [opened] = campaign.collect_events()
    assert isinstance(opened, Campaign.Opened)
    assert opened.campaign_id == "small"
    assert opened.floor_price == Decimal("5.00")
    assert opened.pricing["tiers"][1] == {"min_quantity": 5, "unit_price": Decimal("8.00")}
    assert opened.cancellation_cutoff == "PT1H"
    assert opened.timestamp == OPENED_AT
    assert campaign.definition == small_definition()


def test_a_new_campaign_shows_the_first_price_and_nothing_committed() -> None:
    campaign = open_campaign()
    assert (campaign.unit_price, campaign.committed_quantity) == (Decimal("10.00"), 0)
    assert campaign.is_open(DURING)


def test_a_campaign_cannot_open_with_its_deadline_passed() -> None:
    with pytest.raises(DefinitionError, match="deadline: must be later than now"):
        Campaign.open(small_definition(), DEADLINE)


def test_commands_refuse_a_time_without_a_time_zone() -> None:
    with pytest.raises(ClockError):
        open_campaign().place_order(order(1), DURING.replace(tzinfo=None))


def test_the_deadline_can_be_extended_while_open() -> None:
    campaign = open_campaign()
    later = DEADLINE + timedelta(days=2)
    campaign.extend_deadline(later, DURING)
    assert campaign.deadline == later
    [extended] = campaign.collect_events()
    assert isinstance(extended, Campaign.DeadlineExtended)
    assert (extended.deadline, extended.previous_deadline) == (later, DEADLINE)
    assert campaign.place_order(order(1), DEADLINE).accepted


def test_the_deadline_can_only_move_later() -> None:
    campaign = open_campaign()
    with pytest.raises(DeadlineNotLaterError, match="must be later"):
        campaign.extend_deadline(DEADLINE, DURING)
    with pytest.raises(DeadlineNotLaterError):
        campaign.extend_deadline(DEADLINE - timedelta(hours=1), DURING)


def test_the_deadline_cannot_be_extended_once_passed_or_closed() -> None:
    campaign = open_campaign()
    with pytest.raises(CampaignClosedError, match="has passed"):
        campaign.extend_deadline(DEADLINE + timedelta(days=1), DEADLINE)
    campaign.cancel(DURING)
    with pytest.raises(CampaignClosedError, match="closed"):
        campaign.extend_deadline(DEADLINE + timedelta(days=1), DURING)


def test_the_clock_closes_nothing_before_the_deadline() -> None:
    campaign = open_campaign()
    assert not campaign.close_if_due(DEADLINE - timedelta(seconds=1))
    assert campaign.closing is None
    assert campaign.collect_events() == []


def test_the_clock_closes_at_the_deadline_and_a_campaign_at_minimum_succeeds() -> None:
    campaign = open_campaign()  # minimum 5
    campaign.place_order(order(3, site="site-b"), DURING)
    campaign.place_order(order(2, site="site-a"), DURING)
    campaign.collect_events()
    assert campaign.close_if_due(DEADLINE + timedelta(minutes=3))
    [closed] = campaign.collect_events()
    assert isinstance(closed, Campaign.Closed)
    assert closed.outcome == "succeeded"
    assert closed.reason == "deadline"
    assert closed.unit_price == Decimal("8.00")
    assert closed.filled_quantity == 5
    assert closed.lines == [
        {"site_id": "site-a", "quantity": 2},
        {"site_id": "site-b", "quantity": 3},
    ]
    # The close belongs to the deadline, however late the clock came round.
    assert closed.closed_at == DEADLINE
    assert closed.timestamp == DEADLINE + timedelta(minutes=3)


def test_a_campaign_below_minimum_quantity_fails_and_releases_everyone() -> None:
    campaign = open_campaign()
    campaign.place_order(order(4), DURING)
    campaign.close_if_due(DEADLINE)
    assert campaign.closing is not None
    assert campaign.closing.outcome is CloseOutcome.FAILED
    assert campaign.closing.filled_quantity == 4
    assert campaign.closing.lines == {}
    assert campaign.committed_quantity == 0


def test_conditional_commitments_that_would_not_pay_do_not_count_towards_minimum() -> None:
    campaign = open_campaign()
    campaign.place_order(order(3), DURING)
    campaign.place_order(order(2, max_price="7.00"), DURING)
    campaign.close_if_due(DEADLINE)
    assert campaign.closing is not None
    assert campaign.closing.outcome is CloseOutcome.FAILED
    assert campaign.closing.filled_quantity == 3
    assert campaign.closing.unit_price == Decimal("10.00")


def test_a_campaign_closes_exactly_once() -> None:
    campaign = open_campaign()
    assert campaign.close_if_due(DEADLINE)
    assert not campaign.close_if_due(DEADLINE + timedelta(days=1))
    with pytest.raises(CampaignClosedError, match="already closed"):
        campaign.cancel(DEADLINE)
    closes = [e for e in campaign.collect_events() if isinstance(e, Campaign.Closed)]
    assert len(closes) == 1


def test_the_operator_can_cancel_an_open_campaign_releasing_every_commitment() -> None:
    campaign = open_campaign()
    campaign.place_order(order(5), DURING)
    campaign.cancel(DURING)
    assert campaign.closing is not None
    assert campaign.closing.outcome is CloseOutcome.CANCELLED
    assert campaign.closing.reason is CloseReason.CANCELLED
    assert campaign.closing.filled_quantity == 0
    assert campaign.closing.closed_at == DURING
    assert campaign.committed_quantity == 0


def test_after_a_success_the_live_figures_are_the_final_ones() -> None:
    campaign = open_campaign()
    campaign.place_order(order(5), DURING)
    campaign.place_order(order(1, max_price="9.00"), DURING)
    campaign.close_if_due(DEADLINE)
    late = campaign.place_order(order(1), DEADLINE)
    assert (late.unit_price, late.committed_quantity) == (Decimal("8.00"), 6)


def test_a_campaign_cannot_open_when_its_cutoff_would_already_have_passed() -> None:
    half_an_hour_before = DEADLINE - timedelta(minutes=30)  # the cutoff is an hour
    with pytest.raises(DefinitionError) as caught:
        Campaign.open(small_definition(), half_an_hour_before)
    [problem] = caught.value.problems
    assert problem.field == "cancellation_cutoff"
    assert problem.message == (
        "must be shorter than the PT30M from opening (2026-12-01T17:30:00Z) to the deadline"
    )
    in_time = Campaign.open(small_definition(), DEADLINE - timedelta(minutes=61))
    assert in_time.definition.cancellation_cutoff == timedelta(hours=1)


def test_the_deadline_cannot_be_extended_past_2999() -> None:
    campaign = open_campaign()
    far = datetime(3000, 1, 1, tzinfo=UTC)
    with pytest.raises(DefinitionError, match="deadline: must be between 2000-01-01 and 2999"):
        campaign.extend_deadline(far, DURING)
    assert campaign.deadline == DEADLINE
    campaign.extend_deadline(far - timedelta(microseconds=1), DURING)
    assert campaign.deadline.year == 2999
