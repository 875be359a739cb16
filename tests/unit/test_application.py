"""GroupBuying: commands by campaign id, the aggregate cache, and saving with a Kafka position."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.domain import MutableOrImmutableAggregate
from eventsourcing.persistence import IntegrityError, Tracking

from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.errors import (
    CampaignClosedError,
    CampaignExistsError,
    SnapshotFormatError,
    UnknownCampaignError,
)
from domain.outcomes import Reason
from tests.unit.builders import DEADLINE, DURING, OPENED_AT, order, small_definition

TOPIC = "groupbuy.orders.v1:3"


def stored(app: GroupBuying, campaign_id: str = "small") -> Campaign:
    """The campaign rebuilt from its stored events alone, bypassing the cache."""
    campaign = project_aggregate(None, app.events.get(Campaign.create_id(campaign_id)))
    assert isinstance(campaign, Campaign)
    return campaign


def test_commands_are_saved_and_the_stored_campaign_matches_the_live_one(
    app: GroupBuying,
) -> None:
    app.place_order("small", order(3), DURING)
    placed = order(3)
    app.place_order("small", placed, DURING)
    app.cancel_order("small", placed.order_id, placed.site_id, DURING)
    app.extend_deadline("small", DEADLINE + timedelta(days=1), DURING)
    assert stored(app) == app.get_campaign("small")


def test_a_command_for_an_unknown_campaign_raises_for_the_caller_to_answer(
    app: GroupBuying,
) -> None:
    with pytest.raises(UnknownCampaignError, match="no campaign 'nope'"):
        app.place_order("nope", order(1), DURING)
    assert app.find_campaign("nope") is None
    assert Reason.UNKNOWN_CAMPAIGN.value == "unknown_campaign"


def test_opening_the_same_definition_twice_changes_nothing(app: GroupBuying) -> None:
    assert app.open_campaign(small_definition(), DURING) == Campaign.create_id("small")
    assert stored(app).version == 1


def test_opening_a_campaign_id_again_with_another_definition_is_refused(app: GroupBuying) -> None:
    with pytest.raises(CampaignExistsError, match="choose a new campaign_id"):
        app.open_campaign(small_definition(minimum_quantity=7), DURING)


def test_operator_commands_and_the_clock_go_through_the_service(app: GroupBuying) -> None:
    app.place_order("small", order(5), DURING)
    assert not app.close_if_due("small", DURING)
    assert app.close_if_due("small", DEADLINE)
    with pytest.raises(CampaignClosedError):
        app.cancel_campaign("small", DEADLINE)
    closing = stored(app).closing
    assert closing is not None
    assert closing.filled_quantity == 5


def test_an_operator_cancel_is_saved(app: GroupBuying) -> None:
    app.cancel_campaign("small", DURING)
    assert app.place_order("small", order(1), DURING).reason is Reason.CAMPAIGN_CLOSED


def test_several_campaigns_save_with_a_kafka_position_in_one_transaction(
    app: GroupBuying,
) -> None:
    app.open_campaign(small_definition(campaign_id="other"), OPENED_AT)
    small, other = app.get_campaign("small"), app.get_campaign("other")
    small.place_order(order(2), DURING)
    other.place_order(order(3), DURING)
    app.save_with_tracking([small, other], Tracking(TOPIC, 41))
    assert app.max_tracking_id(TOPIC) == 41
    assert stored(app, "small").committed_quantity == 2
    assert stored(app, "other").committed_quantity == 3


def test_a_batch_without_events_still_moves_the_kafka_position(app: GroupBuying) -> None:
    campaign = app.get_campaign("small")
    duplicate = order(1, order_id="site-a:1")
    campaign.place_order(duplicate, DURING)
    app.save_with_tracking([campaign], Tracking(TOPIC, 1))
    campaign.place_order(duplicate, DURING)
    app.save_with_tracking([campaign], Tracking(TOPIC, 2))
    assert app.max_tracking_id(TOPIC) == 2


def test_a_position_saved_twice_saves_nothing_and_the_cache_forgets_the_changes(
    app: GroupBuying,
) -> None:
    campaign = app.get_campaign("small")
    campaign.place_order(order(2), DURING)
    app.save_with_tracking([campaign], Tracking(TOPIC, 7))
    replayed = app.get_campaign("small")
    replayed.place_order(order(4), DURING)
    with pytest.raises(IntegrityError):
        app.save_with_tracking([replayed], Tracking(TOPIC, 7))
    assert app.get_campaign("small").committed_quantity == 2
    assert stored(app).committed_quantity == 2


def test_a_campaign_changed_but_never_saved_is_reloaded(app: GroupBuying) -> None:
    app.get_campaign("small").place_order(order(2), DURING)
    assert app.get_campaign("small").committed_quantity == 0


def test_a_campaign_written_elsewhere_is_reloaded_and_the_command_decided_again(
    app: GroupBuying,
) -> None:
    app.place_order("small", order(1), DURING)
    elsewhere = stored(app)
    elsewhere.cancel(DURING)
    app.events.put(elsewhere.collect_events())
    # This process's cached copy still looks open; the version clash tells it otherwise.
    outcome = app.place_order("small", order(1), DURING)
    assert outcome.reason is Reason.CAMPAIGN_CLOSED


def test_the_cache_serves_the_same_campaign_without_replaying_it(app: GroupBuying) -> None:
    assert app.get_campaign("small") is app.get_campaign("small")


def test_without_the_cache_every_command_replays_from_the_store() -> None:
    env = {"PERSISTENCE_MODULE": "eventsourcing.popo", "AGGREGATE_CACHE_MAXSIZE": ""}
    with GroupBuying(env=env) as app:
        app.open_campaign(small_definition(), OPENED_AT)
        app.place_order("small", order(5), DURING)
        assert app.get_campaign("small") is not app.get_campaign("small")
        assert app.get_campaign("small").unit_price == Decimal("8.00")


class SnapshottingGroupBuying(GroupBuying):
    name = "GroupBuying"
    snapshotting_intervals: ClassVar[dict[type[MutableOrImmutableAggregate[Any]], int]] = {
        Campaign: 3
    }


def test_snapshots_restore_the_campaign_replaying_only_later_events() -> None:
    with SnapshottingGroupBuying(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}) as app:
        app.open_campaign(small_definition(), OPENED_AT)
        cancelled = order(2, max_price="9.00")
        for placed in (order(3), cancelled, order(1, max_price="7.00"), order(7)):
            app.place_order("small", placed, DURING)
        app.cancel_order("small", cancelled.order_id, cancelled.site_id, DURING)
        app.close_if_due("small", DEADLINE)
        assert app.snapshots is not None
        versions = [s.originator_version for s in app.snapshots.get(Campaign.create_id("small"))]
        assert versions == [3, 6]
        live = app.get_campaign("small")
        app.forget("small")
        assert app.get_campaign("small") == live == stored(app)


def test_an_invalid_order_is_answered_but_never_stored(app: GroupBuying) -> None:
    app.place_order("small", order(2), DURING)
    outcome = app.place_order("small", order(0), DURING)
    assert (outcome.reason, outcome.recorded) == (Reason.INVALID, False)
    assert stored(app).version == 2
    assert [type(e).__name__ for e in app.events.get(Campaign.create_id("small"))] == [
        "Opened",
        "CommitmentPlaced",
    ]


def test_a_snapshot_of_an_older_format_stops_the_load_with_a_clear_error() -> None:
    with SnapshottingGroupBuying(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}) as app:
        app.open_campaign(small_definition(), OPENED_AT)
        for placed in (order(1), order(1), order(7)):
            app.place_order("small", placed, DURING)
        assert app.snapshots is not None
        [snapshot] = app.snapshots.get(Campaign.create_id("small"))
        assert isinstance(snapshot, Campaign.Snapshot)
        older = Campaign.Snapshot(
            originator_id=snapshot.originator_id,
            originator_version=4,
            timestamp=snapshot.timestamp,
            topic=snapshot.topic,
            state=snapshot.state | {"format": 1, "rejected_orders": {}},
        )
        app.snapshots.put([older])
        app.forget("small")
        with pytest.raises(SnapshotFormatError, match="'small' at version 4 has format 1"):
            app.get_campaign("small")
