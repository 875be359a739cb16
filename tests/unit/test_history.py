"""`history --at`: the campaign's figures after exactly the events up to an instant."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from analysis.errors import NotYetOpenedError
from analysis.history import state_at
from domain.campaign import Campaign
from tests.unit.analysis_history import CLOSED_AT, T1, T2, T4, history
from tests.unit.builders import DEADLINE, OPENED_AT


def test_an_instant_before_the_opening_is_refused_with_the_opening_time() -> None:
    with pytest.raises(NotYetOpenedError, match=r"opened at 2026-11-27T09:00:00Z"):
        state_at("small", history(), OPENED_AT - timedelta(seconds=1))


def test_at_the_opening_the_price_is_the_first_tiers_with_the_next_step_ahead() -> None:
    state = state_at("small", history(), OPENED_AT)

    assert (state.status, state.version, state.unit_price) == ("open", 1, Decimal("10.00"))
    assert (state.committed_quantity, state.filled_quantity, state.buyers) == (0, 0, 0)
    assert (state.next_unit_price, state.units_to_next_price) == (Decimal("8.00"), 5)


def test_between_events_the_figures_are_those_after_the_last_event_before() -> None:
    state = state_at("small", history(), T2 + timedelta(minutes=30))

    assert (state.version, state.last_event_at) == (3, T2)
    assert (state.unit_price, state.committed_quantity, state.filled_quantity) == (
        Decimal("8.00"),
        7,
        7,
    )
    assert (state.buyers, state.next_unit_price, state.units_to_next_price) == (
        2,
        Decimal("6.00"),
        3,
    )


def test_an_event_at_exactly_the_instant_counts() -> None:
    state = state_at("small", history(), T1)

    assert (state.version, state.committed_quantity) == (2, 3)


def test_a_withdrawal_raises_the_price_again_and_unfills_conditional_units() -> None:
    state = state_at("small", history(), T4)

    assert (state.unit_price, state.committed_quantity, state.filled_quantity) == (
        Decimal("10.00"),
        8,
        3,
    )
    assert state.buyers == 2


def test_past_the_deadline_but_not_yet_closed_it_is_still_open_and_says_so() -> None:
    state = state_at("small", history(), DEADLINE + timedelta(seconds=30))

    assert state.status == "open"
    assert state.note is not None
    assert "past its deadline (2026-12-01T18:00:00Z) but not closed yet" in state.note


def test_after_the_close_it_shows_the_outcome_and_no_next_price() -> None:
    state = state_at("small", history(), CLOSED_AT)

    assert (state.status, state.close_reason, state.closed_at) == ("failed", "deadline", DEADLINE)
    assert (state.filled_quantity, state.committed_quantity, state.note) == (3, 8, None)
    assert (state.next_unit_price, state.units_to_next_price) == (None, None)


def test_at_each_commitment_the_figures_equal_those_the_event_recorded() -> None:
    events = history()
    for event in events:
        if isinstance(event, Campaign.CommitmentPlaced | Campaign.CommitmentWithdrawn):
            state = state_at("small", events, event.timestamp)
            recorded = (
                event.unit_price,
                event.committed_quantity,
                event.filled_quantity,
                event.buyers,
            )
            assert (
                state.unit_price,
                state.committed_quantity,
                state.filled_quantity,
                state.buyers,
            ) == recorded


def test_the_json_view_writes_money_and_time_as_the_contract_does() -> None:
    view = state_at("small", history(), T2).to_json_dict()

    assert view["unit_price"] == "8.00"
    assert view["at"] == "2026-11-27T11:00:00Z"
    assert view["deadline"] == "2026-12-01T18:00:00Z"
