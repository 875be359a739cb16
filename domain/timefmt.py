"""Instants (RFC 3339, UTC) and durations (ISO 8601) as the contract writes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from domain.errors import ClockError

_INSTANT = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)
# Years and months have no fixed length, so a cutoff is written in weeks to seconds.
_DURATION = re.compile(
    r"P(?:(?P<weeks>\d{1,6})W)?(?:(?P<days>\d{1,6})D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d{1,6})H)?(?:(?P<minutes>\d{1,6})M)?(?:(?P<seconds>\d{1,6})S)?)?"
)
# The contract's instants lie in these years; far ones would overflow time arithmetic.
EARLIEST_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)
END_OF_INSTANTS = datetime(3000, 1, 1, tzinfo=UTC)  # the first instant past 2999-12-31
YEARS_HINT = "between 2000-01-01 and 2999-12-31"


def utc(moment: datetime, name: str = "now") -> datetime:
    """The same instant in UTC; naive datetimes are refused, not guessed."""
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ClockError(name)
    return moment.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """Parses an RFC 3339 UTC timestamp such as "2026-12-01T18:00:00Z"."""
    match = _INSTANT.fullmatch(text)
    if match is None:
        msg = f'must be an RFC 3339 UTC timestamp such as "2026-12-01T18:00:00Z", not {text!r}'
        raise ValueError(msg)
    if match["zone"] not in ("Z", "z", "+00:00"):
        msg = f"must be in UTC (ending in Z), not at offset {match['zone']}"
        raise ValueError(msg)
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except ValueError:
        msg = f"is not a real date and time: {text!r}"
        raise ValueError(msg) from None


def within_contract_years(moment: datetime) -> bool:
    """Whether `moment` lies between 2000-01-01 and 2999-12-31, as the contract's instants do."""
    return EARLIEST_INSTANT <= moment < END_OF_INSTANTS


def format_instant(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, as every message of the contract writes time."""
    return utc(moment).isoformat().replace("+00:00", "Z")


def parse_duration(text: str) -> timedelta:
    """Parses an ISO 8601 duration such as "PT1H", "P1D" or "PT30M"."""
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groupdict().values()):
        msg = (
            "must be an ISO 8601 duration in weeks, days, hours, minutes or seconds, "
            f'such as "PT1H", "P1D" or "PT30M", not {text!r}'
        )
        raise ValueError(msg)
    parts = {unit: int(value) for unit, value in match.groupdict().items() if value}
    return timedelta(**parts)


def format_duration(duration: timedelta) -> str:
    """The shortest ISO 8601 form of a whole-second duration, e.g. "P1DT2H"."""
    days, rest = duration.days, int(duration.seconds)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    date = f"{days}D" if days else ""
    if not date and not time:
        return "PT0S"
    return f"P{date}" + (f"T{time}" if time else "")
