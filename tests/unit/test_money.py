"""Money is exact and in the currency's minor unit; time is UTC; durations are ISO 8601."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from domain.errors import ClockError
from domain.money import fits_currency, is_known_currency, minor_unit, parse_money, round_money
from domain.timefmt import format_duration, format_instant, parse_duration, parse_instant, utc


@pytest.mark.parametrize(
    ("currency", "decimals"),
    [("EUR", 2), ("USD", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("KWD", 3), ("TND", 3)],
)
def test_each_currency_has_its_minor_unit(currency: str, decimals: int) -> None:
    assert minor_unit(currency) == decimals


@pytest.mark.parametrize("code", ["EUR", "JPY", "CHF", "OMR"])
def test_circulating_currencies_are_known(code: str) -> None:
    assert is_known_currency(code)


@pytest.mark.parametrize("code", ["XXX", "eur", "EURO", "XAU", ""])
def test_unknown_or_ill_formed_currency_codes_are_not_known(code: str) -> None:
    assert not is_known_currency(code)


def test_money_rounds_half_up_to_the_minor_unit() -> None:
    assert round_money(Decimal("1.005"), "EUR") == Decimal("1.01")
    assert round_money(Decimal("1.5"), "JPY") == Decimal("2")
    assert round_money(Decimal("1.0005"), "KWD") == Decimal("1.001")


def test_a_decimal_string_parses_to_the_currency_s_minor_unit() -> None:
    assert str(parse_money("79", "EUR")) == "79.00"
    assert str(parse_money("79.5", "EUR")) == "79.50"
    assert str(parse_money("1200", "JPY")) == "1200"


@pytest.mark.parametrize("text", ["-1.00", "1e3", "1,00", " 1.00", "NaN", "1.00 EUR", ""])
def test_money_that_is_not_a_plain_decimal_string_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="decimal string"):
        parse_money(text, "EUR")


def test_money_with_more_decimals_than_the_currency_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="more than 0 decimals"):
        parse_money("100.5", "JPY")
    assert not fits_currency(Decimal("79.001"), "EUR")
    assert fits_currency(Decimal("79.001"), "BHD")
    assert not fits_currency(Decimal("Infinity"), "EUR")


def test_instants_are_rfc_3339_in_utc() -> None:
    moment = parse_instant("2026-12-01T18:00:00Z")
    assert moment == datetime(2026, 12, 1, 18, tzinfo=UTC)
    assert format_instant(moment) == "2026-12-01T18:00:00Z"
    assert parse_instant("2026-12-01T18:00:00+00:00") == moment


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("2026-12-01T19:00:00+01:00", "UTC"),
        ("2026-12-01T18:00:00", "RFC 3339"),
        ("2026-12-01", "RFC 3339"),
        ("2026-02-30T18:00:00Z", "not a real date"),
    ],
)
def test_instants_outside_utc_or_ill_formed_are_refused(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_instant(text)


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("PT1H", timedelta(hours=1)),
        ("P1D", timedelta(days=1)),
        ("PT30M", timedelta(minutes=30)),
        ("P1DT2H30M", timedelta(days=1, hours=2, minutes=30)),
        ("PT45S", timedelta(seconds=45)),
        ("P2W", timedelta(weeks=2)),
    ],
)
def test_iso_8601_durations_parse_and_print_back(text: str, duration: timedelta) -> None:
    assert parse_duration(text) == duration
    assert parse_duration(format_duration(duration)) == duration


@pytest.mark.parametrize("text", ["P1M", "P1Y", "PT", "P", "1H", "PT1.5H", "-PT1H"])
def test_durations_of_months_years_or_bad_syntax_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601 duration"):
        parse_duration(text)


def test_a_time_without_zone_is_refused_and_other_zones_become_utc() -> None:
    with pytest.raises(ClockError, match="timezone-aware"):
        utc(datetime(2026, 11, 27, 10, 0))
    paris = timezone(timedelta(hours=1))
    assert utc(datetime(2026, 11, 27, 11, 0, tzinfo=paris)) == datetime(
        2026, 11, 27, 10, 0, tzinfo=UTC
    )


def test_money_in_another_scripts_digits_is_refused() -> None:
    with pytest.raises(ValueError, match="decimal string"):
        parse_money("٧٩.00", "EUR")
