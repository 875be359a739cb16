"""Order messages decode into commands, and malformed ones say precisely what is wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from consumers.order_messages import (
    MAX_MESSAGE_BYTES,
    CancelOrder,
    MalformedMessageError,
    PlaceOrder,
    decode,
)
from tests.unit.builders import CANCELLED, PLACED


def encode(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()


def reason_for(value: bytes | None) -> str:
    with pytest.raises(MalformedMessageError) as raised:
        decode(value)
    return str(raised.value)


def test_placed_order_decodes_with_exact_money_and_utc_time() -> None:
    command = decode(encode(PLACED))

    assert command == PlaceOrder(
        order_id="site-a:1001",
        site_id="site-a",
        campaign_id="laptop-x1",
        buyer_id="b-42",
        quantity=2,
        max_unit_price=Decimal("95.00"),
        placed_at=datetime(2026, 11, 27, 10, tzinfo=UTC),
    )


def test_max_unit_price_is_optional() -> None:
    fields = {k: v for k, v in PLACED.items() if k != "max_unit_price"}

    command = decode(encode(fields))

    assert isinstance(command, PlaceOrder)
    assert command.max_unit_price is None


def test_cancellation_decodes() -> None:
    command = decode(encode(CANCELLED))

    assert command == CancelOrder(
        "site-a:1001", "site-a", "laptop-x1", datetime(2026, 11, 27, 11, tzinfo=UTC)
    )


def test_unknown_extra_fields_are_ignored() -> None:
    assert decode(encode(PLACED | {"coupon": "XMAS", "v": 2})) == decode(encode(PLACED))


def test_whitespace_around_the_object_is_json_too() -> None:
    assert decode(b" \n" + encode(PLACED) + b"\r\n\t ") == decode(encode(PLACED))


def test_a_well_formed_order_has_no_problem() -> None:
    command = decode(encode(PLACED))

    assert isinstance(command, PlaceOrder)
    assert command.problem is None


def test_negative_quantity_is_readable_and_named_as_the_problem_to_answer_invalid() -> None:
    command = decode(encode(PLACED | {"quantity": -3}))

    assert isinstance(command, PlaceOrder)
    assert command.quantity == -3
    assert command.problem == "quantity -3 is not between 1 and 1000000"


def test_an_instant_with_an_offset_is_converted_to_utc() -> None:
    command = decode(encode(PLACED | {"placed_at": "2026-11-27T15:30:00.250+05:30"}))

    assert isinstance(command, PlaceOrder)
    assert command.placed_at == datetime(2026, 11, 27, 10, 0, 0, 250_000, tzinfo=UTC)
    assert command.placed_at is not None
    assert command.placed_at.tzinfo is UTC


def test_rfc_3339_lowercase_t_and_z_and_nanoseconds_are_read() -> None:
    command = decode(encode(CANCELLED | {"cancelled_at": "2026-11-27t11:00:00.123456789z"}))

    assert isinstance(command, CancelOrder)
    assert command.cancelled_at == datetime(2026, 11, 27, 11, 0, 0, 123_456, tzinfo=UTC)


def test_ids_may_hold_any_printable_unicode() -> None:
    fields = PLACED | {"order_id": "bücher:№1 ✓", "buyer_id": "Zoë\u00a0K"}

    command = decode(encode(fields))

    assert isinstance(command, PlaceOrder)
    assert (command.order_id, command.buyer_id, command.problem) == (
        "bücher:№1 ✓",
        "Zoë\u00a0K",
        None,
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x00\xff not text", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b'{"quantity": NaN}', "not JSON"),
        (b'{"type": "order.placed"} {"type": "order.placed"}', "not JSON: Extra data"),
        (b"[1, 2]", "not a JSON object but list"),
        (None, "empty message"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "oversized message"),
    ],
)
def test_unparseable_messages_say_why(value: bytes | None, reason: str) -> None:
    assert reason in reason_for(value)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "order.shipped"}, "unknown type 'order.shipped'"),
        ({"type": None}, "missing field 'type'"),
        ({"quantity": None}, "missing field 'quantity'"),
        ({"order_id": None}, "missing field 'order_id'"),
        ({"quantity": "2"}, "field 'quantity' must be an integer"),
        ({"quantity": 2.5}, "field 'quantity' must be an integer"),
        ({"quantity": True}, "field 'quantity' must be an integer"),
        ({"buyer_id": 42}, "field 'buyer_id' must be a non-empty string"),
        ({"site_id": "  "}, "field 'site_id' must be a non-empty string"),
        ({"order_id": "x" * 129}, "longer than 128"),
        ({"site_id": "Site-A"}, "field 'site_id' must be a slug"),
        ({"campaign_id": "-laptop"}, "field 'campaign_id' must be a slug"),
        ({"max_unit_price": 95.0}, "must be a decimal string"),
        ({"max_unit_price": "cheap"}, "is not a decimal number"),
        ({"max_unit_price": "Infinity"}, "is not a decimal number written plainly"),
        ({"placed_at": "yesterday"}, "is not an RFC 3339 instant"),
        ({"placed_at": "2026-11-27T10:00:00"}, "has no UTC offset"),
        ({"placed_at": "2026-11-27 10:00:00Z"}, "is not an RFC 3339 instant"),
        ({"placed_at": "20261127T100000Z"}, "is not an RFC 3339 instant"),
        ({"placed_at": "2026-02-30T10:00:00Z"}, "is not a real date and time"),
    ],
)
def test_invalid_fields_say_which_field_and_what_is_wrong(
    change: dict[str, Any], reason: str
) -> None:
    fields = {k: v for k, v in (PLACED | change).items() if v is not None}

    assert reason in reason_for(encode(fields))
