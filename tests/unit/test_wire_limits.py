"""Whatever the event store holds becomes a message, and the largest fit their topics."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from consumers.settlement import settlement_messages
from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.definition import MAX_QUANTITY
from domain.outcomes import Order
from infra.adapters.topics import Topics
from projections.wire import decode, encode
from tests.unit.builders import DURING, OPENED_AT, open_campaign, order, small_definition

YEAR_1_EAST = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))  # no UTC form: year 0
YEAR_9999_WEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
FORTY_DIGITS = Decimal("1234567890" * 4 + ".25")
SITES = 10_000
# Kafka's record batch around one record: a 61-byte header, the record's own varints, its
# key and headers (the relay's "type" and "version"); far less than this.
RECORD_OVERHEAD = 1024


@pytest.fixture
def app() -> Iterator[GroupBuying]:
    application = GroupBuying(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield application
    application.close()


def as_stored(app: GroupBuying, event: Any) -> Any:
    """The event as the relay reads it back from the store."""
    return app.mapper.to_domain_event(app.mapper.to_stored_event(event))


def placed(**changes: Any) -> Campaign.CommitmentPlaced:
    """A commitment.placed event, with fields no order could give it today."""
    campaign = open_campaign()
    campaign.place_order(order(2), DURING)
    (event,) = campaign.collect_events()
    assert isinstance(event, Campaign.CommitmentPlaced)
    return dataclasses.replace(event, **changes)


@pytest.mark.parametrize(
    "placed_at", [YEAR_1_EAST, YEAR_9999_WEST, datetime(1999, 1, 1, tzinfo=UTC)]
)
def test_a_placed_at_outside_the_contract_years_is_published_as_null(
    app: GroupBuying, placed_at: datetime
) -> None:
    event = as_stored(app, placed(placed_at=placed_at))

    message = json.loads(encode(event, "small"))

    assert message["placed_at"] is None
    assert (message["type"], message["version"], message["order_id"]) == (
        "commitment.placed",
        2,
        event.order_id,
    )


def test_a_placed_at_within_the_contract_years_is_published_in_utc(app: GroupBuying) -> None:
    at_plus_one = datetime(2026, 11, 27, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    event = as_stored(app, placed(placed_at=at_plus_one))

    assert json.loads(encode(event, "small"))["placed_at"] == "2026-11-27T09:00:00Z"


@pytest.mark.parametrize("instant", [YEAR_1_EAST, YEAR_9999_WEST])
def test_an_instant_with_no_utc_form_keeps_its_own_offset(
    app: GroupBuying, instant: datetime
) -> None:
    campaign = open_campaign()
    campaign.extend_deadline(campaign.deadline + timedelta(days=1), DURING)
    (extended,) = campaign.collect_events()
    assert isinstance(extended, Campaign.DeadlineExtended)
    far: dict[str, Any] = {"deadline": instant, "timestamp": instant}
    event = as_stored(app, dataclasses.replace(extended, **far))

    decoded = decode(encode(event, "small"))

    assert decoded.fields["deadline"] == instant.isoformat()
    assert decoded.occurred_at == instant  # the same instant, read back


def test_money_of_forty_digits_and_a_billion_units_are_written_exactly(app: GroupBuying) -> None:
    event = as_stored(
        app,
        placed(
            quantity=MAX_QUANTITY,
            committed_quantity=MAX_QUANTITY,
            filled_quantity=MAX_QUANTITY,
            max_unit_price=FORTY_DIGITS,
            unit_price=FORTY_DIGITS,
        ),
    )

    fields = decode(encode(event, "small")).fields

    assert fields["quantity"] == fields["committed_quantity"] == 1_000_000_000
    assert fields["max_unit_price"] == fields["unit_price"] == "1234567890" * 4 + ".25"


def site(n: int) -> str:
    """A site id of the slug's full 64 characters."""
    return f"site-{n:05d}-".ljust(64, "x")


@pytest.fixture(scope="module")
def ten_thousand_sites() -> Campaign:
    """A campaign sold out by 10,000 sites of 64-character ids, the whole stock of 10^9
    units shared so that every line's quantity has as many digits as it can (6)."""
    share = MAX_QUANTITY // SITES
    definition = small_definition(
        maximum_quantity=MAX_QUANTITY, minimum_quantity=1, max_per_buyer=None
    )
    campaign = Campaign.open(definition, OPENED_AT)
    for n in range(SITES):
        campaign.place_order(Order(f"o-{n}", site(n), f"b-{n}", share), DURING)
    assert campaign.closing is not None
    assert len(campaign.closing.lines) == SITES
    return campaign


def test_the_campaign_closed_of_10000_sites_fits_the_campaign_events_topic(
    ten_thousand_sites: Campaign,
) -> None:
    closed = ten_thousand_sites.pending_events[-1]
    assert isinstance(closed, Campaign.Closed)
    topics = Topics()

    value = encode(closed, "small")

    assert len(json.loads(value)["lines"]) == SITES
    assert len(value) > 950_000  # 97 bytes a line: the worst the field limits allow
    assert len(value) + RECORD_OVERHEAD <= topics.max_message_bytes(topics.campaign_events)


def test_the_purchase_order_of_10000_sites_fits_the_suppliers_topic(
    ten_thousand_sites: Campaign,
) -> None:
    topics = Topics()
    supplier = topics.settlements("acme")
    closed = encode(ten_thousand_sites.pending_events[-1], "small")

    purchase_order, *settlements = settlement_messages(
        ten_thousand_sites, supplier, topics.site_buyer_settlements
    )

    assert purchase_order.topic == supplier
    assert len(json.loads(purchase_order.value)["lines"]) == SITES
    # Its lines take the event's bytes: whatever campaign-events took, the supplier takes.
    assert len(purchase_order.value) <= len(closed) + 2048
    limit = topics.max_message_bytes(supplier)
    assert topics.max_message_bytes(topics.campaign_events) + 2048 <= limit
    assert len(purchase_order.value) + RECORD_OVERHEAD <= limit
    largest = max(len(m.value) for m in settlements)
    assert largest + RECORD_OVERHEAD <= topics.max_message_bytes(
        topics.site_buyer_settlements("site-a")
    )
