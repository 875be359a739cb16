"""The fast transcoder writes exactly the bytes eventsourcing's own JSON transcoder writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Mapper
from hypothesis import given
from hypothesis import strategies as st

from domain.campaign import Campaign
from domain.outcomes import Order
from infra.adapters.transcoder import FlatJSONTranscoder
from tests.unit.builders import DURING, OPENED_AT, small_definition


def registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    Application.register_transcodings(None, transcoder)  # type: ignore[arg-type]
    return transcoder


LIBRARY, FLAT = registered(JSONTranscoder()), registered(FlatJSONTranscoder())

zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), None])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=zones),
    st.uuids(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(), values, max_size=12))
def test_any_state_is_written_byte_for_byte_as_the_library_writes_it(
    state: dict[str, Any],
) -> None:
    assert FLAT.encode(state) == LIBRARY.encode(state)


@given(st.one_of(values, st.dictionaries(st.integers(), scalars, max_size=3)))
def test_values_that_are_not_flat_states_go_to_the_library(value: Any) -> None:
    assert FLAT.encode(value) == LIBRARY.encode(value)


def test_an_order_event_is_stored_as_the_library_stores_it() -> None:
    campaign = Campaign.open(small_definition(), OPENED_AT)
    limit = Decimal("9.50")
    campaign.place_order(Order("site-a:1", "site-a", "b-ü\n", 2, limit, OPENED_AT), DURING)
    campaign.place_order(Order("site-a:2", "site-a", "b-2", 99, None, OPENED_AT), DURING)
    events = campaign.collect_events()

    library, flat = Mapper(transcoder=LIBRARY), Mapper(transcoder=FLAT)
    assert [flat.to_stored_event(e) for e in events] == [library.to_stored_event(e) for e in events]
    restored = [flat.to_domain_event(flat.to_stored_event(e)) for e in events]
    assert restored == events


def test_the_stored_instants_keep_their_offset() -> None:
    instant = datetime(2026, 11, 27, 10, 0, tzinfo=timezone(timedelta(hours=1)))

    assert FLAT.decode(FLAT.encode({"at": instant})) == {"at": instant}


def test_an_instant_is_written_in_its_own_zone_after_the_same_instant_in_utc() -> None:
    # UTC instants are remembered as written, and equal instants in other zones compare equal.
    instant = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    states = [{"at": instant}, {"at": instant.astimezone(timezone(timedelta(hours=1)))}]

    assert [FLAT.encode(s) for s in states] == [LIBRARY.encode(s) for s in states]
