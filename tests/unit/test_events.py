"""Events are the Kafka contract: explicit JSON-friendly fields, a class_version, replayable."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.application import project_aggregate
from eventsourcing.domain import CanMutateAggregate

from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.outcomes import Reason
from tests.unit.builders import DEADLINE, DURING, open_campaign, order

EVENT_NAMES = [
    "Opened",
    "CommitmentPlaced",
    "OrderRejected",
    "CommitmentWithdrawn",
    "CancellationRejected",
    "DeadlineExtended",
    "Closed",
]


def every_kind_of_event() -> list[CanMutateAggregate[UUID]]:
    campaign = Campaign.open(open_campaign().definition, DURING - timedelta(hours=1))
    placed = order(2, max_price="9.00")
    campaign.place_order(placed, DURING)
    campaign.place_order(order(7), DURING)  # over the per-buyer limit of 6
    campaign.cancel_order(placed.order_id, placed.site_id, DURING)
    campaign.cancel_order("site-a:404", "site-a", DURING)
    campaign.extend_deadline(DEADLINE + timedelta(days=1), DURING)
    campaign.place_order(order(5), DURING)
    campaign.cancel(DURING)
    return list(campaign.collect_events())


def plain(value: Any) -> bool:
    if isinstance(value, list):
        return all(plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return value is None or isinstance(value, str | int | Decimal | datetime)


def test_each_event_is_a_past_participle_with_class_version_one() -> None:
    for name in EVENT_NAMES:
        event_class = getattr(Campaign, name)
        assert event_class.class_version == 1
    assert [type(e).__name__ for e in every_kind_of_event()] == [
        "Opened",
        "CommitmentPlaced",
        "OrderRejected",
        "CommitmentWithdrawn",
        "CancellationRejected",
        "DeadlineExtended",
        "CommitmentPlaced",
        "Closed",
    ]


def test_event_fields_are_strings_numbers_decimals_times_and_lists_or_dicts_of_them() -> None:
    for event in every_kind_of_event():
        fields = {k: v for k, v in vars(event).items() if k != "originator_id"}
        assert plain(fields), event


def test_each_event_carries_exactly_its_fields_in_their_order() -> None:
    # The per-order events are built without their dataclass __init__ (Campaign._record).
    for event in every_kind_of_event():
        assert list(vars(event)) == [f.name for f in dataclasses.fields(event)], event
        assert vars(event) == vars(type(event)(**vars(event)))


def test_events_survive_the_json_transcoder_unchanged() -> None:
    mapper = GroupBuying(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper
    for event in every_kind_of_event():
        stored = mapper.to_stored_event(event)
        json.loads(stored.state)
        assert mapper.to_domain_event(stored) == event


def test_replaying_the_events_rebuilds_the_same_campaign() -> None:
    events = every_kind_of_event()
    first = project_aggregate(None, events[:1])
    assert isinstance(first, Campaign)
    rebuilt = project_aggregate(None, events)
    assert isinstance(rebuilt, Campaign)
    assert rebuilt.closing is not None
    assert rebuilt.version == len(events)


def test_every_event_takes_its_time_from_the_command() -> None:
    assert {e.timestamp for e in every_kind_of_event()[1:]} == {DURING}


def test_commitment_events_carry_the_figures_a_read_model_shows() -> None:
    campaign = open_campaign(max_per_buyer=None)
    first = order(4, buyer="b-1")
    campaign.place_order(first, DURING)
    campaign.place_order(order(2, buyer="b-1"), DURING)  # the same buyer again
    campaign.place_order(order(3, buyer="b-2", max_price="9.00"), DURING)
    campaign.cancel_order(first.order_id, first.site_id, DURING)

    events = campaign.collect_events()

    figures = [(e.committed_quantity, e.filled_quantity, e.buyers) for e in events]
    # 9 units at 8.00 once b-2's limit of 9.00 counts; withdrawing 4 units leaves 5 at 8.00.
    assert figures == [(4, 4, 1), (6, 6, 1), (9, 9, 2), (5, 5, 2)]


def test_an_order_applied_after_a_later_one_keeps_the_events_in_time_order() -> None:
    # Two sites' topics are read in no order between them: the order appended first (on
    # site-a's topic, a second before the deadline) is applied second.
    campaign = open_campaign()
    later, earlier = DEADLINE - timedelta(milliseconds=500), DEADLINE - timedelta(seconds=1)
    campaign.place_order(order(2, site="site-b"), later)

    outcome = campaign.place_order(order(3, site="site-a"), earlier)

    assert outcome.accepted  # in time by its own append time
    first, second = campaign.pending_events[-2:]
    assert (first.timestamp, second.timestamp) == (later, later)
    past = campaign.place_order(order(1, site="site-c"), DEADLINE + timedelta(seconds=1))
    assert past.reason is Reason.CAMPAIGN_CLOSED  # after the deadline by its own time
