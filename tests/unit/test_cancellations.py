"""Cancellations: allowed while open and before the cutoff; the price may rise again."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from domain.campaign import Campaign
from domain.outcomes import Reason, Verdict
from tests.unit.builders import DEADLINE, DURING, before_deadline, open_campaign, order


def test_cancelling_an_order_withdraws_its_commitment() -> None:
    campaign = open_campaign()
    placed = order(2)
    campaign.place_order(placed, DURING)
    outcome = campaign.cancel_order(placed.order_id, placed.site_id, DURING)
    assert outcome.verdict is Verdict.ACCEPTED
    assert outcome.committed_quantity == 0
    assert campaign.commitments[placed.site_id, placed.order_id].withdrawn


def test_a_cancellation_records_a_commitment_withdrawn_event() -> None:
    campaign = open_campaign()
    placed = order(2, max_price="9.00")
    campaign.place_order(placed, DURING)
    campaign.collect_events()
    campaign.cancel_order(placed.order_id, placed.site_id, DURING)
    [withdrawn] = campaign.collect_events()
    assert isinstance(withdrawn, Campaign.CommitmentWithdrawn)
    assert (withdrawn.order_id, withdrawn.quantity) == (placed.order_id, 2)
    assert withdrawn.max_unit_price == Decimal("9.00")
    assert withdrawn.committed_quantity == 0


def test_a_cancellation_can_raise_the_live_price_again() -> None:
    campaign = open_campaign()
    big = order(3)
    campaign.place_order(big, DURING)
    campaign.place_order(order(2), DURING)
    assert campaign.unit_price == Decimal("8.00")
    outcome = campaign.cancel_order(big.order_id, big.site_id, DURING)
    assert outcome.unit_price == Decimal("10.00")
    assert campaign.unit_price == Decimal("10.00")


def test_cancelling_an_order_already_withdrawn_changes_nothing() -> None:
    campaign = open_campaign()
    placed = order(2)
    campaign.place_order(placed, DURING)
    campaign.cancel_order(placed.order_id, placed.site_id, DURING)
    campaign.collect_events()
    again = campaign.cancel_order(placed.order_id, placed.site_id, DURING)
    assert (again.verdict, again.duplicate) == (Verdict.ACCEPTED, True)
    assert campaign.collect_events() == []


def test_a_withdrawn_order_placed_again_stays_withdrawn() -> None:
    campaign = open_campaign()
    placed = order(2)
    campaign.place_order(placed, DURING)
    campaign.cancel_order(placed.order_id, placed.site_id, DURING)
    again = campaign.place_order(placed, DURING)
    assert again.duplicate
    assert campaign.committed_quantity == 0


def test_cancelling_an_unknown_order_is_rejected_and_recorded() -> None:
    campaign = open_campaign()
    outcome = campaign.cancel_order("site-a:404", "site-a", DURING)
    assert outcome.reason is Reason.UNKNOWN_ORDER
    [rejected] = campaign.collect_events()
    assert isinstance(rejected, Campaign.CancellationRejected)
    assert rejected.reason == "unknown_order"


def test_a_rejected_cancellation_can_succeed_when_the_order_arrives_later() -> None:
    campaign = open_campaign()
    late = order(1)
    campaign.cancel_order(late.order_id, late.site_id, DURING)
    campaign.place_order(late, DURING)
    assert campaign.cancel_order(late.order_id, late.site_id, DURING).accepted


def test_a_site_cannot_cancel_another_site_s_order() -> None:
    campaign = open_campaign()
    placed = order(1, site="site-a")
    campaign.place_order(placed, DURING)
    outcome = campaign.cancel_order(placed.order_id, "site-b", DURING)
    assert outcome.reason is Reason.UNKNOWN_ORDER
    assert campaign.committed_quantity == 1


def test_a_rejected_order_cannot_be_cancelled() -> None:
    campaign = open_campaign()
    refused = order(0)
    campaign.place_order(refused, DURING)
    assert campaign.cancel_order(refused.order_id, "site-a", DURING).reason is Reason.UNKNOWN_ORDER


def test_cancelling_after_the_cutoff_is_rejected() -> None:
    campaign = open_campaign()  # the cutoff is one hour before the deadline
    placed = order(1)
    campaign.place_order(placed, DURING)
    at_cutoff = before_deadline(timedelta(hours=1))
    outcome = campaign.cancel_order(placed.order_id, placed.site_id, at_cutoff)
    assert outcome.reason is Reason.CUTOFF_PASSED
    assert campaign.committed_quantity == 1


def test_cancelling_just_before_the_cutoff_is_accepted() -> None:
    campaign = open_campaign()
    placed = order(1)
    campaign.place_order(placed, DURING)
    in_time = before_deadline(timedelta(hours=1, seconds=1))
    assert campaign.cancel_order(placed.order_id, placed.site_id, in_time).accepted


def test_without_a_cutoff_cancelling_is_allowed_until_the_deadline() -> None:
    campaign = open_campaign(cancellation_cutoff=None)
    placed = order(1)
    campaign.place_order(placed, DURING)
    just_before = before_deadline(timedelta(seconds=1))
    assert campaign.cancel_order(placed.order_id, placed.site_id, just_before).accepted


def test_the_cutoff_moves_with_an_extended_deadline() -> None:
    campaign = open_campaign()
    placed = order(1)
    campaign.place_order(placed, DURING)
    campaign.extend_deadline(DEADLINE + timedelta(days=1), DURING)
    at_old_cutoff = before_deadline(timedelta(hours=1))
    assert campaign.cancel_order(placed.order_id, placed.site_id, at_old_cutoff).accepted


def test_cancelling_after_the_deadline_or_close_is_rejected_as_campaign_closed() -> None:
    campaign = open_campaign(cancellation_cutoff=None)
    placed = order(1)
    campaign.place_order(placed, DURING)
    late = campaign.cancel_order(placed.order_id, placed.site_id, DEADLINE)
    assert late.reason is Reason.CAMPAIGN_CLOSED
    campaign.close_if_due(DEADLINE)
    after = campaign.cancel_order(placed.order_id, placed.site_id, DURING)
    assert after.reason is Reason.CAMPAIGN_CLOSED


def test_a_cancellation_with_ids_outside_the_contract_is_invalid_and_records_nothing() -> None:
    campaign = open_campaign()
    placed = order(1)
    campaign.place_order(placed, DURING)
    campaign.collect_events()
    for order_id, site_id in [("x" * 129, "site-a"), ("site-a:\x00", "site-a"), ("1", "Site A")]:
        outcome = campaign.cancel_order(order_id, site_id, DURING)
        assert (outcome.reason, outcome.recorded) == (Reason.INVALID, False)
    assert campaign.collect_events() == []
    assert campaign.committed_quantity == 1


def test_a_cancellation_finds_only_its_own_site_s_order_of_that_id() -> None:
    campaign = open_campaign()
    campaign.place_order(order(1, site="site-a", order_id="1001"), DURING)
    campaign.place_order(order(2, site="site-b", order_id="1001"), DURING)
    assert campaign.cancel_order("1001", "site-b", DURING).committed_quantity == 1
    assert not campaign.commitments["site-a", "1001"].withdrawn
    assert campaign.commitments["site-b", "1001"].withdrawn
    assert campaign.cancel_order("1001", "site-c", DURING).reason is Reason.UNKNOWN_ORDER
