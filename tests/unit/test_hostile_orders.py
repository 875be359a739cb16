"""Hostile order messages (the audit's section 7) decode to a command or a clear dead letter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.order_messages import (
    MAX_MESSAGE_BYTES,
    CancelOrder,
    MalformedMessageError,
    OrderMessage,
    PlaceOrder,
    decode,
)
from domain.text import is_identifier, is_slug
from tests.unit.builders import CANCELLED, PLACED

PLACED_IDS = ("order_id", "site_id", "campaign_id")  # they name the answer: a dead letter
CONTROL_CHARACTERS = ["\x00", "\x01", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]
HUGE = "9" * 4301


def encode(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()


def reason_for(value: bytes | None) -> str:
    with pytest.raises(MalformedMessageError) as raised:
        decode(value)
    return str(raised.value)


def placed(**changes: Any) -> PlaceOrder:
    command = decode(encode(PLACED | changes))
    assert isinstance(command, PlaceOrder)
    return command


def cancelled(**changes: Any) -> CancelOrder:
    command = decode(encode(CANCELLED | changes))
    assert isinstance(command, CancelOrder)
    return command


# 1. Deep nesting


def test_an_array_nested_5000_deep_is_a_dead_letter_without_recursion() -> None:
    assert reason_for(b"[" * 5000 + b"]" * 5000) == "JSON nested 5000 deep, at most 8"


def test_brackets_up_to_the_size_limit_are_refused_as_too_deep() -> None:
    half = MAX_MESSAGE_BYTES // 2
    assert "nested 32768 deep" in reason_for(b"{" * half + b"}" * half)


def test_an_order_with_an_extra_field_nested_9_deep_is_a_dead_letter() -> None:
    nine_deep: Any = [[[[[[[[1]]]]]]]]  # 8 arrays inside the message's own object

    assert "nested 9 deep, at most 8" in reason_for(encode(PLACED | {"extra": nine_deep}))


def test_an_order_with_an_extra_field_nested_8_deep_decodes() -> None:
    eight_deep: Any = [[[[[[[1]]]]]]]

    assert decode(encode(PLACED | {"extra": eight_deep})) == decode(encode(PLACED))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    command = placed(order_id="[[[[[[[[[[{{{{{{{{{{", extra='"]]]]\\"[[[[[[[[[[')

    assert command.order_id == "[[[[[[[[[[{{{{{{{{{{"


# 2. Long integers


@pytest.mark.parametrize(
    "change", [f'"quantity": {HUGE}', f'"quantity": 2, "extra": {HUGE}', f'"quantity": -{HUGE}']
)
def test_an_integer_of_4301_digits_is_a_dead_letter_in_any_field(change: str) -> None:
    message = encode(PLACED).replace(b'"quantity": 2', change.encode())

    assert reason_for(message) == "a JSON integer of 4301 digits, at most 20"


def test_an_integer_of_21_digits_is_a_dead_letter() -> None:
    assert "a JSON integer of 21 digits" in reason_for(encode(PLACED | {"quantity": -(10**20)}))


def test_a_quantity_of_20_digits_is_readable_and_answered_invalid() -> None:
    command = placed(quantity=-(10**20 - 1))

    assert command.problem == f"quantity {-(10**20 - 1)} is not between 1 and 1000000"


@pytest.mark.parametrize(
    ("quantity", "problem"),
    [
        (0, "quantity 0 is not between 1 and 1000000"),
        (1_000_001, "quantity 1000001 is not between 1 and 1000000"),
        (1, None),
        (1_000_000, None),
    ],
)
def test_quantity_is_an_integer_from_1_to_a_million(quantity: int, problem: str | None) -> None:
    assert placed(quantity=quantity).problem == problem


def test_a_float_with_an_enormous_exponent_is_a_type_error_not_a_crash() -> None:
    text = encode(PLACED).replace(b'"quantity": 2', b'"quantity": 1e99999999999999999999')

    assert "field 'quantity' must be an integer, got inf" in reason_for(text)


# 3 and the id rules. Lone surrogates and control characters


@pytest.mark.parametrize("name", PLACED_IDS)
def test_a_lone_surrogate_in_an_id_of_an_order_is_a_dead_letter(name: str) -> None:
    text = encode(PLACED | {name: "a\ud800"})
    assert b"\\ud800" in text  # as the JSON escape, which is valid UTF-8 on the wire

    reason = reason_for(text)

    assert reason.startswith(f"field {name!r}")
    assert "lone surrogate" in reason or "must be a slug" in reason


@pytest.mark.parametrize("name", PLACED_IDS)
def test_a_lone_surrogate_in_an_id_of_a_cancellation_is_a_dead_letter(name: str) -> None:
    reason = reason_for(encode(CANCELLED | {name: "\udfff"}))

    assert reason.startswith(f"field {name!r}")


def test_a_lone_surrogate_in_the_buyer_id_is_answered_invalid() -> None:
    command = placed(buyer_id="b\ud800")

    assert command.problem == (
        "buyer_id contains a lone surrogate, which is not Unicode text: 'b\\ud800'"
    )


def test_a_surrogate_pair_escape_is_one_real_character_and_fine() -> None:
    assert placed(buyer_id="b\U0001f600").problem is None


@pytest.mark.parametrize("character", CONTROL_CHARACTERS)
def test_a_control_character_in_an_order_id_is_a_dead_letter(character: str) -> None:
    for message in (PLACED, CANCELLED):
        reason = reason_for(encode(message | {"order_id": f"a{character}b"}))

        assert reason.startswith("field 'order_id' contains a control character")


@pytest.mark.parametrize("character", CONTROL_CHARACTERS)
@pytest.mark.parametrize("name", ["site_id", "campaign_id"])
def test_a_control_character_in_a_slug_is_a_dead_letter(name: str, character: str) -> None:
    for message in (PLACED, CANCELLED):
        reason = reason_for(encode(message | {name: f"site{character}"}))

        assert reason.startswith(f"field {name!r} must be a slug")


@pytest.mark.parametrize("character", CONTROL_CHARACTERS)
def test_a_control_character_in_the_buyer_id_is_answered_invalid(character: str) -> None:
    problem = placed(buyer_id=f"b{character}").problem

    assert problem is not None
    assert problem.startswith("buyer_id contains a control character")


@pytest.mark.parametrize("site_id", ["[/x]", "[red]site", "\u001b[2J", "\u001b]0;title\u0007"])
def test_a_site_id_with_markup_or_terminal_escapes_is_a_dead_letter(site_id: str) -> None:
    for message in (PLACED, CANCELLED):
        assert "field 'site_id' must be a slug" in reason_for(
            encode(message | {"site_id": site_id})
        )


def test_a_reason_shows_control_characters_escaped_and_stays_short() -> None:
    reason = reason_for(encode(PLACED | {"site_id": "\u001b[2J" + "x" * 10_000}))

    assert "\x1b" not in reason
    assert "\\x1b[2J" in reason
    assert len(reason) < 200


@pytest.mark.parametrize(
    ("buyer_id", "problem"),
    [
        ("b" * 128, None),
        ("b" * 129, "buyer_id is longer than 128 characters (129)"),
        ("", "buyer_id must be a non-empty string, got ''"),
        ("   ", "buyer_id must be a non-empty string, got '   '"),
    ],
)
def test_a_buyer_id_out_of_its_limits_is_answered_invalid(
    buyer_id: str, problem: str | None
) -> None:
    assert placed(buyer_id=buyer_id).problem == problem


def test_an_order_id_of_128_characters_is_fine_and_of_129_a_dead_letter() -> None:
    assert placed(order_id="o" * 128).order_id == "o" * 128
    assert "longer than 128 characters" in reason_for(encode(PLACED | {"order_id": "o" * 129}))


def test_a_slug_of_64_characters_is_fine_and_of_65_a_dead_letter() -> None:
    assert placed(campaign_id="c" * 64).campaign_id == "c" * 64
    assert "must be a slug" in reason_for(encode(PLACED | {"campaign_id": "c" * 65}))


# 7. Extreme instants


@pytest.mark.parametrize(
    "instant",
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "1999-12-31T23:59:59Z",
        "2000-01-01T00:30:00+01:00",  # 1999 in UTC
        "2999-12-31T23:30:00-01:00",  # 3000 in UTC
        "3000-01-01T00:00:00Z",
    ],
)
def test_a_placed_at_outside_the_contracts_years_is_dropped(instant: str) -> None:
    command = placed(placed_at=instant)

    assert command.placed_at is None
    assert command.problem is None


@pytest.mark.parametrize("instant", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_cancelled_at_outside_the_contracts_years_is_dropped(instant: str) -> None:
    assert cancelled(cancelled_at=instant).cancelled_at is None


def test_the_first_and_last_instants_of_the_contract_are_kept_in_utc() -> None:
    assert placed(placed_at="2000-01-01T00:00:00Z").placed_at == datetime(2000, 1, 1, tzinfo=UTC)
    last = placed(placed_at="2999-12-31T23:59:59.999999Z").placed_at
    assert last == datetime(2999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


@pytest.mark.parametrize(
    ("instant", "utc"),
    [
        ("1999-12-31T23:59:00-00:01", datetime(2000, 1, 1, tzinfo=UTC)),
        ("3000-01-01T00:30:00+01:00", datetime(2999, 12, 31, 23, 30, tzinfo=UTC)),
    ],
)
def test_the_years_are_judged_in_utc_not_at_the_sites_offset(instant: str, utc: datetime) -> None:
    assert placed(placed_at=instant).placed_at == utc


@pytest.mark.parametrize(
    ("instant", "reason"),
    [
        ("2026-11-27T10:00:00+24:00", "is not a real date and time"),
        ("2026-13-01T10:00:00Z", "is not a real date and time"),
        ("2026-11-27T10:00Z", "is not an RFC 3339 instant"),
        ("2026-11-27T10:00:00+0100", "is not an RFC 3339 instant"),
        ("2026-W48-5T10:00:00Z", "is not an RFC 3339 instant"),
        ("٢٠٢٦-11-27T10:00:00Z", "is not an RFC 3339 instant"),
    ],
)
def test_a_malformed_instant_is_a_dead_letter(instant: str, reason: str) -> None:
    assert f"field 'placed_at' {reason}" in reason_for(encode(PLACED | {"placed_at": instant}))
    assert f"field 'cancelled_at' {reason}" in reason_for(
        encode(CANCELLED | {"cancelled_at": instant})
    )


# 12. Money strings


@pytest.mark.parametrize(
    "price", ["1e999999", "1E+26", "-0", " 95.00 ", "9_5.00", "٩٥", "1e-999999", "95.", ".5", "+1"]
)
def test_a_price_that_is_not_a_plain_decimal_is_a_dead_letter(price: str) -> None:
    reason = reason_for(encode(PLACED | {"max_unit_price": price}))

    assert reason.startswith("field 'max_unit_price' is not a decimal number written plainly")


@pytest.mark.parametrize(
    ("price", "problem"),
    [
        ("95.0000001", "max_unit_price has more than 3 decimals"),
        ("1000000000000.00", "max_unit_price has more than 12 digits before the point"),
        ("9" * 5000, "max_unit_price has more than 12 digits before the point"),
    ],
)
def test_a_plain_price_out_of_bounds_is_answered_invalid(price: str, problem: str) -> None:
    command = placed(max_unit_price=price)

    assert command.problem == problem
    assert command.max_unit_price == Decimal(price)


@pytest.mark.parametrize("price", ["999999999999.999", "0.001", "95", "0"])
def test_a_plain_price_within_bounds_is_read_exactly(price: str) -> None:
    command = placed(max_unit_price=price)

    assert (command.max_unit_price, command.problem) == (Decimal(price), None)


def test_several_problems_are_named_together() -> None:
    command = placed(quantity=0, buyer_id="", max_unit_price="0.0001")

    assert command.problem == (
        "buyer_id must be a non-empty string, got ''; quantity 0 is not between 1 and 1000000; "
        "max_unit_price has more than 3 decimals"
    )


# 13. Duplicate keys


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (b'"quantity": 1, "quantity": 999999999', "quantity"),
        (b'"type": "order.cancelled", "type": "order.placed"', "type"),
        (b'"quantity" : 1,"quantity":2', "quantity"),
        (b'"note": "a, b", "quantity": 1, "quantity": 2', "quantity"),
        (b'"extra": {"a": 1, "a": 2}, "quantity": 2', "a"),
        (b'"extra": [{"a": [1], "a": 2}], "quantity": 2', "a"),
    ],
)
def test_a_duplicate_key_at_any_level_is_a_dead_letter(text: bytes, key: str) -> None:
    message = encode(PLACED).replace(b'"quantity": 2', text)

    assert reason_for(message) == f"duplicate key {key!r}"


def test_commas_inside_strings_do_not_look_like_duplicates() -> None:
    assert placed(order_id="a,b,,c", extra=",,,").order_id == "a,b,,c"


# Size


def padded_to(size: int) -> bytes:
    """A good order message of exactly `size` bytes, padded in an unknown field."""
    base = encode(PLACED | {"pad": ""})
    return encode(PLACED | {"pad": "p" * (size - len(base))})


def test_a_message_of_exactly_64_kib_decodes() -> None:
    message = padded_to(64 * 1024)
    assert len(message) == 64 * 1024

    assert decode(message) == decode(encode(PLACED))


def test_a_message_one_byte_over_64_kib_is_a_dead_letter() -> None:
    message = padded_to(64 * 1024 + 1)

    assert reason_for(message) == "oversized message: 65537 bytes, at most 65536"


# Whatever the bytes: a command within the limits, or a dead letter with a clear reason

# Characters that break rules: controls, lone surrogates, JSON syntax, other scripts' digits,
# spaces that are not " ". (Listed, because text() leaves surrogates out of mixed alphabets.)
AWKWARD = st.characters() | st.sampled_from(
    [
        *'[]{}",:\\-.eE+ 0123456789az',
        *"\ud800\udfff\x00\x1b\x7f\x85\x9f\u00a0\u202e\u0669\U0001f600",
    ]
)


def awkward_text(min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    return st.lists(AWKWARD, min_size=min_size, max_size=max_size).map("".join)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.floats()
    | awkward_text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(awkward_text(), inner, max_size=3),
    max_leaves=12,
)
INSTANTS = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1),
)
# Values near the limits, in the shapes the fields take.
EDGY = st.one_of(
    st.integers(-2, 3) | st.integers(999_998, 1_000_002) | st.integers(-(10**21), 10**21),
    st.from_regex(r"-?[0-9]{0,14}(\.[0-9]{0,5})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    INSTANTS.map(datetime.isoformat),
    st.from_regex(r"[a-z0-9-]{0,66}", fullmatch=True),
    awkward_text(126, 130),
)


@st.composite
def order_messages(draw: st.DrawFn) -> dict[str, Any]:
    """An example order message with up to three fields changed or removed, or one added."""
    message = dict(draw(st.sampled_from([PLACED, CANCELLED])))
    names = st.sampled_from([*sorted(message), "extra"])
    for name in draw(st.sets(names, max_size=3)):
        if draw(st.integers(0, 4)) == 0 and name in message:
            del message[name]
        else:
            message[name] = draw(st.one_of(EDGY, JSON_VALUES, awkward_text()))
    return message


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    """A good message with a few bytes changed, inserted or cut."""
    message = bytearray(encode(draw(st.sampled_from([PLACED, CANCELLED]))))
    pieces = st.binary(max_size=4) | awkward_text(max_size=4).map(
        lambda text: json.dumps(text)[1:-1].encode()
    )
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(message)))
        cut = draw(st.integers(0, 3))
        message[at : at + cut] = draw(pieces)
    return bytes(message)


def check_total(value: bytes) -> OrderMessage | None:
    """Decodes `value`; only MalformedMessageError may escape, with a short reason that a
    Kafka header can carry and that the checks, not the safety net, gave."""
    try:
        return decode(value)
    except MalformedMessageError as error:
        reason = str(error)
        reason.encode("utf-8")
        assert 0 < len(reason) <= 300
        assert not reason.startswith("unreadable"), reason
        return None


def check_within_limits(command: OrderMessage | None) -> None:
    """What decodes names a (site, order) that can be answered, and keeps every limit unless
    `problem` says which it breaks."""
    if command is None:
        return
    assert is_slug(command.site_id)
    assert is_slug(command.campaign_id)
    assert is_identifier(command.order_id)
    instant = command.placed_at if isinstance(command, PlaceOrder) else command.cancelled_at
    assert instant is None or (instant.tzinfo is UTC and 2000 <= instant.year <= 2999)
    if isinstance(command, PlaceOrder) and command.problem is None:
        assert is_identifier(command.buyer_id)
        assert 1 <= command.quantity <= 1_000_000
        price = command.max_unit_price
        assert price is None or (0 <= price < 10**12 and price == round(price, 3))


def keeps_the_id_rule(text: str) -> bool:
    """SPEC section 2, written out: 1 to 128 characters, none a control or a surrogate (and,
    as the decoder has always asked, not only whitespace)."""
    forbidden = [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
    surrogates = [c for c in text if 0xD800 <= ord(c) <= 0xDFFF]
    return 1 <= len(text) <= 128 and not forbidden and not surrogates and not text.isspace()


def keeps_the_slug_rule(text: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    return 1 <= len(text) <= 64 and set(text) <= allowed and not text.startswith("-")


HOSTILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HOSTILE
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_a_dead_letter(value: bytes) -> None:
    check_within_limits(check_total(value))


@HOSTILE
@given(JSON_VALUES, st.just(0) | st.integers(0, 3000))
def test_any_json_value_however_deep_decodes_or_is_a_dead_letter(value: Any, depth: int) -> None:
    text = "[" * depth + json.dumps(value) + "]" * depth

    check_within_limits(check_total(text.encode()))


@HOSTILE
@given(order_messages())
def test_any_order_shaped_message_decodes_within_the_limits_or_is_a_dead_letter(
    fields: dict[str, Any],
) -> None:
    check_within_limits(check_total(json.dumps(fields).encode()))


@HOSTILE
@given(mutations())
def test_any_mangled_order_message_decodes_within_the_limits_or_is_a_dead_letter(
    value: bytes,
) -> None:
    check_within_limits(check_total(value))


@HOSTILE
@given(awkward_text(0, 130) | st.text(max_size=130), st.sampled_from([PLACED, CANCELLED]))
def test_an_order_id_decodes_exactly_when_it_keeps_the_id_rule(
    order_id: str, message: dict[str, Any]
) -> None:
    command = check_total(encode(message | {"order_id": order_id}))

    assert (command is not None) == keeps_the_id_rule(order_id)


@HOSTILE
@given(awkward_text(0, 130) | st.text(max_size=130))
def test_a_buyer_id_has_no_problem_exactly_when_it_keeps_the_id_rule(buyer_id: str) -> None:
    command = check_total(encode(PLACED | {"buyer_id": buyer_id}))

    assert isinstance(command, PlaceOrder)
    assert (command.problem is None) == keeps_the_id_rule(buyer_id)


@HOSTILE
@given(
    st.from_regex(r"[a-z0-9-]{0,66}", fullmatch=True) | awkward_text(0, 66),
    st.sampled_from(["site_id", "campaign_id"]),
    st.sampled_from([PLACED, CANCELLED]),
)
def test_a_site_or_campaign_id_decodes_exactly_when_it_is_a_slug(
    slug: str, name: str, message: dict[str, Any]
) -> None:
    command = check_total(encode(message | {name: slug}))

    assert (command is not None) == keeps_the_slug_rule(slug)


@HOSTILE
@given(INSTANTS, st.sampled_from([("placed_at", PLACED), ("cancelled_at", CANCELLED)]))
def test_any_rfc_3339_instant_is_read_in_utc_or_dropped_outside_the_contracts_years(
    moment: datetime, field: tuple[str, dict[str, Any]]
) -> None:
    name, message = field
    text = moment.isoformat().replace("+00:00", "Z")

    command = decode(encode(message | {name: text}))

    read = getattr(command, name)
    in_years = datetime(2000, 1, 1, tzinfo=UTC) <= moment < datetime(3000, 1, 1, tzinfo=UTC)
    assert read == (moment if in_years else None)
    assert read is None or read.tzinfo is UTC


@HOSTILE
@given(st.from_regex(r"[0-9]{1,15}(\.[0-9]{1,5})?", fullmatch=True))
def test_a_plain_price_is_read_exactly_with_a_problem_only_out_of_bounds(price: str) -> None:
    whole, _, decimals = price.partition(".")

    command = check_total(encode(PLACED | {"max_unit_price": price}))

    assert isinstance(command, PlaceOrder)
    assert command.max_unit_price == Decimal(price)
    assert (command.problem is None) == (len(whole) <= 12 and len(decimals) <= 3)
