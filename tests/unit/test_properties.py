"""Properties over random schedules and random histories of orders, cancellations and closes."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.application import project_aggregate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.clearing import clear
from domain.definition import CampaignDefinition
from domain.demand import Demand
from domain.errors import CampaignClosedError, DeadlineNotLaterError
from domain.outcomes import CloseOutcome, Order, Outcome, Reason
from domain.pricing import PriceSchedule
from tests.unit.brute import brute_force_clearing, willing_at
from tests.unit.builders import DURING
from tests.unit.strategies import commitments, definitions, limits, schedules

FAST = settings(max_examples=300, deadline=None)
HISTORIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAPPER = GroupBuying(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper


def demand_of(items: list[tuple[int, Decimal | None]]) -> Demand:
    demand = Demand()
    for quantity, limit in items:
        demand.add(quantity, limit)
    return demand


@FAST
@given(schedules, st.integers(1, 200))
def test_price_never_goes_below_the_floor_nor_rises_with_quantity(
    schedule: PriceSchedule, quantity: int
) -> None:
    assert schedule.price(quantity) >= schedule.floor_price
    assert schedule.price(quantity + 1) <= schedule.price(quantity)


@FAST
@given(schedules.flatmap(lambda s: st.tuples(st.just(s), commitments(s))))
def test_the_fast_clearing_price_is_the_brute_force_one(
    case: tuple[PriceSchedule, list[tuple[int, Decimal | None]]],
) -> None:
    schedule, items = case
    clearing = clear(schedule, demand_of(items))
    assert (clearing.unit_price, clearing.filled_quantity) == brute_force_clearing(schedule, items)


@FAST
@given(schedules.flatmap(lambda s: st.tuples(st.just(s), commitments(s))))
def test_the_clearing_price_is_a_fixed_point(
    case: tuple[PriceSchedule, list[tuple[int, Decimal | None]]],
) -> None:
    schedule, items = case
    clearing = clear(schedule, demand_of(items))
    assert clearing.unit_price >= schedule.floor_price
    if clearing.filled_quantity:
        # The filled units reach the price, and every filled buyer accepts it.
        assert schedule.price(clearing.filled_quantity) <= clearing.unit_price
        assert clearing.filled_quantity == willing_at(items, clearing.unit_price)
    lower = [p for p in schedule.prices() if p < clearing.unit_price]
    assert all(schedule.price(max(willing_at(items, p), 1)) > p for p in lower)


@FAST
@given(
    schedules.flatmap(lambda s: st.tuples(st.just(s), commitments(s), limits(s))),
    st.integers(1, 12),
)
def test_more_commitments_never_raise_the_price(
    case: tuple[PriceSchedule, list[tuple[int, Decimal | None]], Decimal | None], quantity: int
) -> None:
    schedule, items, limit = case
    before = clear(schedule, demand_of(items)).unit_price
    assert clear(schedule, demand_of([*items, (quantity, limit)])).unit_price <= before


@dataclass(frozen=True)
class Place:
    slot: int
    buyer: int
    site: int
    quantity: int
    limit: Decimal | None


@dataclass(frozen=True)
class Cancel:
    slot: int
    site: int


@dataclass(frozen=True)
class Wait:
    minutes: int


@dataclass(frozen=True)
class Extend:
    hours: int


@dataclass(frozen=True)
class Clock:
    pass


@dataclass(frozen=True)
class CallOff:
    pass


Step = Place | Cancel | Wait | Extend | Clock | CallOff


def steps(definition: CampaignDefinition) -> st.SearchStrategy[list[Step]]:
    place = st.builds(
        Place,
        st.integers(0, 14),
        st.integers(0, 3),
        st.integers(0, 2),
        st.integers(0, 6),
        limits(definition.pricing),
    )
    other: list[tuple[int, st.SearchStrategy[Step]]] = [
        (70, st.builds(Cancel, st.integers(0, 14), st.integers(0, 2))),
        (84, st.builds(Wait, st.integers(1, 60 * 48))),
        (90, st.builds(Extend, st.integers(-2, 24))),
        (98, st.just(Clock())),
        (100, st.just(CallOff())),  # rare, or few histories would get past it
    ]

    def pick(roll: int) -> st.SearchStrategy[Step]:
        return place if roll < 55 else next(s for bound, s in other if roll < bound)

    step = st.integers(0, 99).flatmap(pick)
    return st.lists(step, max_size=40)


histories = definitions().flatmap(lambda d: st.tuples(st.just(d), steps(d)))


def run(campaign: Campaign, step: Step, now: Any) -> Any:
    match step:
        case Place(slot, buyer, site, quantity, limit):
            order = Order(f"o{slot}", f"site-{site}", f"b{buyer}", quantity, limit)
            key = (order.site_id, order.order_id)
            known = key in campaign.commitments or key in campaign.rejected_orders
            before = copy.deepcopy(vars(campaign))
            outcome = campaign.place_order(order, now)
            if quantity == 0:  # invalid: answered, never recorded, holds nothing
                assert (outcome.reason, outcome.recorded) == (Reason.INVALID, False)
                assert vars(campaign) == before
            elif known:  # placing the same order twice changes nothing
                assert outcome.duplicate
                assert vars(campaign) == before
        case Cancel(slot, site):
            campaign.cancel_order(f"o{slot}", f"site-{site}", now)
        case Wait(minutes):
            return now + timedelta(minutes=minutes)
        case Extend(hours):
            later = campaign.deadline + timedelta(hours=hours)
            if campaign.is_open(now) and hours > 0:
                campaign.extend_deadline(later, now)
            else:  # only later, only while open
                with pytest.raises((CampaignClosedError, DeadlineNotLaterError)):
                    campaign.extend_deadline(later, now)
        case Clock():
            campaign.close_if_due(now)
        case CallOff():
            if campaign.closing is None:
                campaign.cancel(now)
            else:  # closing happens exactly once
                with pytest.raises(CampaignClosedError):
                    campaign.cancel(now)
    return now


def check_invariants(campaign: Campaign) -> None:
    definition = campaign.definition
    live = [c for c in campaign.commitments.values() if not c.withdrawn]
    items = [(c.quantity, c.max_unit_price) for c in live]
    assert campaign.unit_price >= definition.floor_price
    assert campaign.buyers == len({(c.site_id, c.buyer_id) for c in live})
    if definition.max_per_buyer is not None:
        held: dict[tuple[str, str], int] = {}
        for c in live:
            held[c.site_id, c.buyer_id] = held.get((c.site_id, c.buyer_id), 0) + c.quantity
        assert all(q <= definition.max_per_buyer for q in held.values())
    cap = definition.maximum_quantity
    closing = campaign.closing
    if closing is None:
        assert campaign.committed_quantity == sum(q for q, _ in items)
        assert cap is None or campaign.committed_quantity <= cap
        assert campaign.unit_price == brute_force_clearing(definition.pricing, items)[0]
        return
    assert cap is None or closing.filled_quantity <= cap
    if closing.outcome is CloseOutcome.CANCELLED:
        return
    price, filled = brute_force_clearing(definition.pricing, items)
    assert (closing.unit_price, closing.filled_quantity) == (price, filled)
    succeeded = closing.outcome is CloseOutcome.SUCCEEDED
    assert succeeded == (filled >= definition.minimum_quantity)
    assert sum(closing.lines.values()) == (filled if succeeded else 0)


@HISTORIES
@given(histories)
def test_random_histories_keep_every_invariant_and_replay_to_the_same_state(
    history: tuple[CampaignDefinition, list[Step]],
) -> None:
    definition, plan = history
    campaign = Campaign.open(definition, DURING - timedelta(hours=1))
    events = list(campaign.collect_events())
    now = DURING
    # Every history ends with the clock, so that every history is closed once.
    for step in [*plan, Wait(0), Clock()]:
        now = max(now, campaign.deadline) if step == Wait(0) else run(campaign, step, now)
        check_invariants(campaign)
        events.extend(campaign.collect_events())
    assert campaign.closing is not None
    stored = [MAPPER.to_domain_event(MAPPER.to_stored_event(e)) for e in events]
    assert vars(project_aggregate(None, stored)) == vars(campaign)
    snapshot = MAPPER.to_stored_event(Campaign.Snapshot.take(campaign))
    assert vars(project_aggregate(None, [MAPPER.to_domain_event(snapshot)])) == vars(campaign)


def site_steps(definition: CampaignDefinition) -> st.SearchStrategy[list[Step]]:
    """Orders and cancellations from three sites that number their orders alike (o0 to o3)."""
    place = st.builds(
        Place,
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(0, 2),
        st.integers(0, 6),
        limits(definition.pricing),
    )
    cancel = st.builds(Cancel, st.integers(0, 3), st.integers(0, 2))
    wait = st.builds(Wait, st.integers(1, 60 * 24))
    return st.lists(st.one_of(place, place, place, cancel, wait, st.just(Clock())), max_size=40)


@dataclass
class Tally:
    """What the outcomes said, order by order: the units each (site, order_id) committed."""

    accepted: dict[tuple[str, str], int]
    withdrawn: set[tuple[str, str]]
    answered: set[tuple[str, str]]  # accepted, or rejected for good

    def place(self, key: tuple[str, str], quantity: int, outcome: Outcome) -> None:
        if quantity == 0:  # invalid, whatever came before, and holding nothing
            assert (outcome.reason, outcome.duplicate) == (Reason.INVALID, False)
            return
        # A repeat is only ever the repeat of an order of the same site and order_id.
        assert outcome.duplicate == (key in self.answered)
        if outcome.duplicate or not outcome.recorded:
            return
        if outcome.accepted:
            self.accepted[key] = quantity
        if outcome.accepted or outcome.reason in REMEMBERED:
            self.answered.add(key)

    def cancel(self, key: tuple[str, str], outcome: Outcome) -> None:
        assert outcome.accepted == (key in self.accepted and outcome.reason is None)
        if outcome.accepted:
            self.withdrawn.add(key)

    def committed(self) -> int:
        return sum(q for key, q in self.accepted.items() if key not in self.withdrawn)


REMEMBERED = {Reason.CAMPAIGN_CLOSED, Reason.SOLD_OUT, Reason.EXCEEDS_STOCK, Reason.PER_BUYER_LIMIT}


@HISTORIES
@given(definitions().flatmap(lambda d: st.tuples(st.just(d), site_steps(d))))
def test_sites_reusing_order_ids_each_count_once_and_replay_to_the_same_state(
    history: tuple[CampaignDefinition, list[Step]],
) -> None:
    definition, plan = history
    campaign = Campaign.open(definition, DURING - timedelta(hours=1))
    events = list(campaign.collect_events())
    tally, now = Tally({}, set(), set()), DURING
    for step in plan:
        match step:
            case Place(slot, buyer, site, quantity, limit):
                order = Order(f"o{slot}", f"site-{site}", f"b{buyer}", quantity, limit)
                outcome = campaign.place_order(order, now)
                tally.place((order.site_id, order.order_id), quantity, outcome)
            case Cancel(slot, site):
                outcome = campaign.cancel_order(f"o{slot}", f"site-{site}", now)
                tally.cancel((f"site-{site}", f"o{slot}"), outcome)
            case Wait(minutes):
                now += timedelta(minutes=minutes)
            case Clock():
                campaign.close_if_due(now)
        new = campaign.collect_events()
        assert len(new) <= 2  # at most a commitment and the sell-out it brings
        if isinstance(step, Place) and step.quantity == 0:
            assert new == []  # invalid orders never reach the event store
        events.extend(new)
        live = [c for c in campaign.commitments.values() if not c.withdrawn]
        assert sum(c.quantity for c in live) == tally.committed()
        if campaign.closing is None:
            assert campaign.committed_quantity == tally.committed()
    assert set(campaign.commitments) == set(tally.accepted)
    stored = [MAPPER.to_domain_event(MAPPER.to_stored_event(e)) for e in events]
    assert vars(project_aggregate(None, stored)) == vars(campaign)
    snapshot = MAPPER.to_stored_event(Campaign.Snapshot.take(campaign))
    assert vars(project_aggregate(None, [MAPPER.to_domain_event(snapshot)])) == vars(campaign)
