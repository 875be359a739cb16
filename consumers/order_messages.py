"""Decoding of order messages to the field limits of docs/contract.md (SPEC section 2)."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import accumulate
from typing import Any

from domain.outcomes import Order
from domain.rules import MAX_ORDER_QUANTITY
from domain.text import MAX_ID_LENGTH, SLUG, SLUG_HINT

MAX_MESSAGE_BYTES = 64 * 1024  # a real order is a few hundred bytes
MAX_DEPTH = 8
MAX_INTEGER_DIGITS = 20  # far above any quantity, far below int()'s 4300-digit refusal
MAX_PRICE_DIGITS = 12
MAX_PRICE_DECIMALS = 3  # the finest minor unit of any currency; the campaign checks its own

_SLUG = re.compile(SLUG)
# C0 and C1 controls and lone surrogates: no text column holds NUL, and UTF-8 no surrogate.
_ID = re.compile(rf"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]{{1,{MAX_ID_LENGTH}}}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# [0-9], not \d, which also takes other scripts' digits: "٩٥" would read as 95.
_PLAIN_DECIMAL = re.compile(r"([0-9]+)(?:\.[0-9]+)?")
_MONEY = re.compile(rf"[0-9]{{1,{MAX_PRICE_DIGITS}}}(?:\.[0-9]{{1,{MAX_PRICE_DECIMALS}}})?")
_DATE_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
_INSTANT = re.compile(_DATE_TIME + r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")
_LOCAL_TIME = re.compile(_DATE_TIME)
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class MalformedMessageError(ValueError):
    """The message cannot be parsed or validated; it goes to the DLQ with this reason."""


@dataclass(frozen=True, slots=True)
class PlaceOrder(Order):
    """The order itself, as the domain takes it, and the campaign it is for.

    `problem` names the field limits a readable order breaks (its ids are fine, so it can
    be answered): it is rejected `invalid` without reaching the campaign.
    """

    campaign_id: str = field(kw_only=True)
    problem: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """A site withdraws an order; `cancelled_at` is the site's clock, for information only
    (None when outside the contract's years)."""

    order_id: str
    site_id: str
    campaign_id: str
    cancelled_at: datetime | None
    problem: str | None = field(default=None, kw_only=True)  # None: it has only ids to break


OrderMessage = PlaceOrder | CancelOrder


def decode(value: bytes | None, site_id: str | None = None) -> OrderMessage:
    """The command an order message asks for; MalformedMessageError says what is wrong.

    `site_id` is the site whose topic the message came from: a message without a `site_id`
    is that site's. Whether one that names a site names that one is for the caller to say.
    Total: whatever the bytes, it returns a command or raises MalformedMessageError.
    """
    try:
        return _command(_json_object(value), site_id)
    except (MalformedMessageError, MemoryError):  # the process's trouble, not the record's
        raise
    except Exception as error:  # a case the checks below missed must not stop ingestion
        raise MalformedMessageError(
            f"unreadable: {type(error).__name__}: {_shown(str(error))}"
        ) from None


def _command(fields: dict[str, Any], site_id: str | None) -> OrderMessage:
    if site_id is not None and fields.get("site_id") is None:
        fields["site_id"] = site_id
    kind = fields.get("type")
    if kind == "order.placed":
        problems: list[str] = []
        buyer_id = _buyer_id(fields, problems)
        quantity = _quantity(fields, problems)
        max_unit_price = _optional_money(fields, "max_unit_price", problems)
        return PlaceOrder(
            _identifier(fields, "order_id"),
            _slug(fields, "site_id"),
            buyer_id,
            quantity,
            max_unit_price,
            _instant(fields, "placed_at"),
            campaign_id=_slug(fields, "campaign_id"),
            problem="; ".join(problems) if problems else None,
        )
    if kind == "order.cancelled":
        return CancelOrder(
            order_id=_identifier(fields, "order_id"),
            site_id=_slug(fields, "site_id"),
            campaign_id=_slug(fields, "campaign_id"),
            cancelled_at=_instant(fields, "cancelled_at"),
        )
    if kind is None:
        raise MalformedMessageError("missing field 'type'")
    raise MalformedMessageError(
        f"unknown type {_shown(kind)}: expected 'order.placed' or 'order.cancelled'"
    )


def _json_object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise MalformedMessageError("empty message (no value)")
    if len(value) > MAX_MESSAGE_BYTES:
        raise MalformedMessageError(
            f"oversized message: {len(value)} bytes, at most {MAX_MESSAGE_BYTES}"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedMessageError(f"not UTF-8: {error.reason} at byte {error.start}") from None
    if "[" in text or text.find("{", 1) != -1:  # nested, or an unusual layout: the careful way
        # The count of brackets bounds the depth; only past the limit is the exact depth
        # worked out, before the recursive parser could overflow the stack.
        if text.count("{") + text.count("[") > MAX_DEPTH:
            _check_depth(text)
        return _parsed(text, _STRICT_JSON)
    fields = _parsed(text, _FLAT_JSON)
    # Outside its strings a flat object has one comma fewer than members, so commas plus one
    # equal to its distinct keys prove that no key came twice: a 0.2 µs count where the
    # strict decoder's check costs 0.9 µs. A comma inside a string takes the careful way.
    if text.count(",") + 1 == len(fields):
        return fields
    return _parsed(text, _STRICT_JSON)


def _parsed(text: str, decoder: json.JSONDecoder) -> dict[str, Any]:
    try:
        # raw_decode skips decode's two whitespace matches: 0.6 of its 1.7 µs a message.
        fields, end = decoder.raw_decode(text)
    except json.JSONDecodeError:
        end = -1
    if end != len(text):  # whitespace around the value, or no JSON: the long way
        try:
            fields = decoder.decode(text)
        except json.JSONDecodeError as error:
            raise MalformedMessageError(f"not JSON: {error.msg} at character {error.pos}") from None
    if not isinstance(fields, dict):
        raise MalformedMessageError(f"not a JSON object but {type(fields).__name__}")
    return fields


def _check_depth(text: str) -> None:
    """Refuses JSON nested deeper than MAX_DEPTH, counting no bracket inside a string."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)
    if depth > MAX_DEPTH:
        raise MalformedMessageError(f"JSON nested {depth} deep, at most {MAX_DEPTH}")


def _no_nan(constant: str) -> None:
    raise MalformedMessageError(f"not JSON: {constant} is not a number JSON allows")


def _integer_literal(literal: str) -> int:
    # Python refuses integers of over 4300 digits with a ValueError; refuse them far sooner.
    if len(literal) <= MAX_INTEGER_DIGITS or len(literal.lstrip("-")) <= MAX_INTEGER_DIGITS:
        return int(literal)
    digits = len(literal.lstrip("-"))
    raise MalformedMessageError(f"a JSON integer of {digits} digits, at most {MAX_INTEGER_DIGITS}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) == len(pairs):
        return fields
    counts = Counter(key for key, _ in pairs)
    duplicate = next(key for key, count in counts.items() if count > 1)
    raise MalformedMessageError(f"duplicate key {_shown(duplicate)}")


# Built once: json.loads with options would build a decoder for every message. Floats stay
# floats: no field takes one, and Decimal raises on an exponent like 1e99999999999999999999.
_FLAT_JSON = json.JSONDecoder(parse_int=_integer_literal, parse_constant=_no_nan)
_STRICT_JSON = json.JSONDecoder(
    parse_int=_integer_literal, parse_constant=_no_nan, object_pairs_hook=_unique_keys
)


def _shown(value: object) -> str:
    """A value in a reason: repr escapes controls and surrogates; a DLQ header stays short."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _required(fields: dict[str, Any], name: str) -> Any:
    if name not in fields or fields[name] is None:
        raise MalformedMessageError(f"missing field {name!r}")
    return fields[name]


# Each check below first passes a good value in one line (they run for every order), and
# only then works out what is wrong with a bad one. Ids that name the answer (order_id,
# site_id, campaign_id) must be good or the message is a dead letter; a readable value out
# of its limits (buyer_id, quantity, max_unit_price) is added to `problems` instead.


def _identifier(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if type(value) is str and _is_id(value):
        return value
    raise MalformedMessageError(f"field {name!r} {_id_fault(_required(fields, name))}")


def _slug(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if type(value) is str and _SLUG.fullmatch(value):
        return value
    value = _required(fields, name)
    if not isinstance(value, str) or not value.strip():
        raise MalformedMessageError(
            f"field {name!r} must be a non-empty string, got {_shown(value)}"
        )
    raise MalformedMessageError(f"field {name!r} must be a slug ({SLUG_HINT}), got {_shown(value)}")


def _buyer_id(fields: dict[str, Any], problems: list[str]) -> str:
    value = fields.get("buyer_id")
    if type(value) is str and _is_id(value):
        return value
    value = _required(fields, "buyer_id")
    if type(value) is not str:
        raise MalformedMessageError(
            f"field 'buyer_id' must be a non-empty string, got {_shown(value)}"
        )
    problems.append(f"buyer_id {_id_fault(value)}")
    return value


def _quantity(fields: dict[str, Any], problems: list[str]) -> int:
    value = fields.get("quantity")
    if type(value) is int and 0 < value <= MAX_ORDER_QUANTITY:  # not a bool, though an int
        return value
    if type(value) is int:  # at most 20 digits, so safe to answer
        problems.append(f"quantity {value} is not between 1 and {MAX_ORDER_QUANTITY}")
        return value
    value = _required(fields, "quantity")
    raise MalformedMessageError(f"field 'quantity' must be an integer, got {_shown(value)}")


def _optional_money(fields: dict[str, Any], name: str, problems: list[str]) -> Decimal | None:
    value = fields.get(name)
    if value is None:
        return None
    if type(value) is str and _MONEY.fullmatch(value):
        return Decimal(value)
    if not isinstance(value, str):
        raise MalformedMessageError(
            f'field {name!r} must be a decimal string like "95.00", got {_shown(value)}'
        )
    plain = _PLAIN_DECIMAL.fullmatch(value)
    if plain is None:
        raise MalformedMessageError(
            f"field {name!r} is not a decimal number written plainly (digits 0-9 and one "
            f"'.', no sign, exponent or spaces): {_shown(value)}"
        )
    if len(plain[1]) > MAX_PRICE_DIGITS:
        problems.append(f"{name} has more than {MAX_PRICE_DIGITS} digits before the point")
    else:
        problems.append(f"{name} has more than {MAX_PRICE_DECIMALS} decimals")
    return Decimal(value)


def _instant(fields: dict[str, Any], name: str) -> datetime | None:
    """An RFC 3339 instant in UTC; None outside the contract's years, which an informational
    time may be (converting such a time to UTC could overflow)."""
    value = fields.get(name)
    if type(value) is not str or not _INSTANT.fullmatch(value):
        raise MalformedMessageError(f"field {name!r} {_instant_fault(_required(fields, name))}")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        instant = _capitalised_instant(name, value)
    if not 1999 <= instant.year <= 3000:  # outside at any offset, and may overflow in UTC
        return None
    if instant.tzinfo is not UTC:
        instant = instant.astimezone(UTC)
    return instant if 2000 <= instant.year <= 2999 else None


def _capitalised_instant(name: str, value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.upper())  # RFC 3339 allows "z"; Python does not
    except ValueError:
        raise MalformedMessageError(
            f"field {name!r} is not a real date and time: {_shown(value)}"
        ) from None


def _is_id(text: str) -> bool:
    if text.isascii() and text.isprintable():  # most ids: no control character, no surrogate
        return 0 < len(text) <= MAX_ID_LENGTH and not text.isspace()
    return _ID.fullmatch(text) is not None and not text.isspace()


def _id_fault(value: object) -> str:
    if not isinstance(value, str) or not value or value.isspace():
        return f"must be a non-empty string, got {_shown(value)}"
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters ({len(value)})"
    if _CONTROL.search(value):
        return f"contains a control character (U+0000-U+001F, U+007F-U+009F): {_shown(value)}"
    return f"contains a lone surrogate, which is not Unicode text: {_shown(value)}"


def _instant_fault(value: object) -> str:
    if not isinstance(value, str):
        return f"must be an RFC 3339 string, got {_shown(value)}"
    if _LOCAL_TIME.fullmatch(value):
        return f"has no UTC offset: {_shown(value)}"
    return f'is not an RFC 3339 instant like "2026-11-27T10:00:00Z": {_shown(value)}'
