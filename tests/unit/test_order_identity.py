"""An order is named by (site_id, order_id): two sites may number their orders alike."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.application import project_aggregate

from domain.application import GroupBuying
from domain.campaign import SNAPSHOT_FORMAT, Campaign
from domain.errors import SnapshotFormatError
from domain.outcomes import Reason
from tests.unit.builders import DURING, open_campaign, order

MAPPER = GroupBuying(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper


def replayed(events: list[Any]) -> Campaign:
    """The campaign its events give once stored and read back, as a cold load does."""
    stored = [MAPPER.to_domain_event(MAPPER.to_stored_event(e)) for e in events]
    campaign = project_aggregate(None, stored)
    assert isinstance(campaign, Campaign)
    return campaign


def test_two_sites_orders_of_the_same_id_are_two_commitments() -> None:
    campaign = open_campaign()
    first = campaign.place_order(order(1, site="site-a", order_id="1001"), DURING)
    second = campaign.place_order(order(5, site="site-b", order_id="1001"), DURING)
    assert first.accepted
    assert second.accepted
    assert not second.duplicate
    assert campaign.committed_quantity == 6
    assert set(campaign.commitments) == {("site-a", "1001"), ("site-b", "1001")}
    placed = [e for e in campaign.collect_events() if isinstance(e, Campaign.CommitmentPlaced)]
    assert [(e.site_id, e.order_id, e.quantity) for e in placed] == [
        ("site-a", "1001", 1),
        ("site-b", "1001", 5),
    ]


def test_a_repeat_is_a_repeat_only_within_its_own_site() -> None:
    campaign = open_campaign()
    campaign.place_order(order(1, site="site-a", order_id="1001"), DURING)
    campaign.place_order(order(2, site="site-b", order_id="1001"), DURING)
    campaign.collect_events()
    for site in ("site-a", "site-b"):
        again = campaign.place_order(order(1, site=site, order_id="1001"), DURING)
        assert again.duplicate
    assert campaign.collect_events() == []
    assert campaign.committed_quantity == 3


def test_one_site_s_rejected_order_does_not_answer_another_site_s_order_of_that_id() -> None:
    campaign = open_campaign()  # at most 6 units a buyer
    refused = campaign.place_order(order(7, site="site-a", order_id="1001"), DURING)
    assert refused.reason is Reason.PER_BUYER_LIMIT
    other = campaign.place_order(order(2, site="site-b", order_id="1001"), DURING)
    assert other.accepted
    assert not other.duplicate
    assert campaign.rejected_orders == {("site-a", "1001"): Reason.PER_BUYER_LIMIT}


def test_replaying_the_stored_events_keys_orders_by_site_and_order_id() -> None:
    campaign = Campaign.open(open_campaign().definition, DURING)
    campaign.place_order(order(1, site="site-a", order_id="1001"), DURING)
    campaign.place_order(order(2, site="site-b", order_id="1001"), DURING)
    campaign.place_order(order(7, site="site-c", order_id="1001", buyer="b-7"), DURING)
    campaign.cancel_order("1001", "site-b", DURING)
    rebuilt = replayed(campaign.collect_events())
    assert vars(rebuilt) == vars(campaign)
    assert set(rebuilt.commitments) == {("site-a", "1001"), ("site-b", "1001")}
    assert rebuilt.commitments["site-b", "1001"].withdrawn
    assert rebuilt.rejected_orders == {("site-c", "1001"): Reason.PER_BUYER_LIMIT}
    assert rebuilt.committed_quantity == 1


def test_an_invalid_rejection_stored_by_an_earlier_version_holds_nothing_on_replay() -> None:
    campaign = Campaign.open(open_campaign().definition, DURING)
    events = list(campaign.collect_events())
    # What earlier versions recorded for `{"order_id": "site-b:2002", "quantity": -1}`.
    events.append(
        Campaign.OrderRejected(
            originator_id=campaign.id,
            originator_version=2,
            timestamp=DURING,
            order_id="site-b:2002",
            site_id="site-b",
            buyer_id="b-1",
            quantity=-1,
            max_unit_price=None,
            placed_at=None,
            reason="invalid",
            unit_price=Decimal("10.00"),
            committed_quantity=0,
        )
    )
    rebuilt = replayed(events)
    assert rebuilt.rejected_orders == {}
    genuine = rebuilt.place_order(order(2, site="site-b", order_id="site-b:2002"), DURING)
    assert genuine.accepted
    assert not genuine.duplicate


def test_a_snapshot_keeps_orders_keyed_by_site_and_order_id() -> None:
    campaign = open_campaign()
    campaign.place_order(order(1, site="site-a", order_id="1001"), DURING)
    campaign.place_order(order(2, site="site-b", order_id="1001"), DURING)
    campaign.place_order(order(7, site="site-c", order_id="1001", buyer="b-7"), DURING)
    campaign.collect_events()
    snapshot = MAPPER.to_stored_event(Campaign.Snapshot.take(campaign))
    restored = project_aggregate(None, [MAPPER.to_domain_event(snapshot)])
    assert isinstance(restored, Campaign)
    assert vars(restored) == vars(campaign)
    assert restored.rejected_orders == {("site-c", "1001"): Reason.PER_BUYER_LIMIT}


def test_a_snapshot_of_an_older_format_is_refused_naming_the_campaign_and_the_cure() -> None:
    campaign = open_campaign()
    campaign.place_order(order(7, site="site-c", order_id="1001", buyer="b-7"), DURING)
    state = campaign._snapshot_state()
    # Format 1 kept rejected orders by order_id alone: their sites are lost.
    older = state | {"format": SNAPSHOT_FORMAT - 1, "rejected_orders": {"1001": "per_buyer_limit"}}
    with pytest.raises(SnapshotFormatError, match="'small' at version 2 has format 1") as caught:
        Campaign._restore(campaign.id, campaign.version, older)
    assert "delete the campaign's snapshots" in str(caught.value)


def test_the_service_counts_each_site_s_order_of_the_same_id(app: GroupBuying) -> None:
    app.place_order("small", order(1, site="site-a", order_id="1001"), DURING)
    app.place_order("small", order(2, site="site-b", order_id="1001"), DURING)
    app.cancel_order("small", "1001", "site-a", DURING)
    app.forget("small")  # read back from the store alone
    campaign = app.get_campaign("small")
    assert campaign.committed_quantity == 2
    assert campaign.commitments["site-a", "1001"].withdrawn
    assert not campaign.commitments["site-b", "1001"].withdrawn


def test_a_price_limit_of_thirteen_digits_is_invalid_and_records_nothing() -> None:
    campaign = open_campaign()

    outcome = campaign.place_order(order(1, max_price="1000000000000.00"), DURING)

    assert outcome.reason is Reason.INVALID
    assert not outcome.recorded
    assert list(campaign.collect_events()) == []
