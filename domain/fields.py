"""Reads fields of a JSON object, collecting every problem instead of stopping at the first."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from domain.errors import Problem
from domain.money import parse_money
from domain.text import is_clean
from domain.timefmt import YEARS_HINT, parse_duration, parse_instant, within_contract_years

T = TypeVar("T")

_MISSING = object()


class FieldReader:
    """Typed access to one JSON object; problems go to a list shared with nested readers."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[Problem]) -> None:
        self.data = data
        self.path = path
        self.problems = problems

    def name(self, field: str) -> str:
        """The dotted path of `field`, as problems report it."""
        return f"{self.path}.{field}" if self.path else field

    def problem(self, field: str, message: str) -> None:
        """Records what is wrong with `field`."""
        self.problems.append(Problem(self.name(field), message))

    def reject_unknown(self, known: frozenset[str]) -> None:
        """Unknown fields are usually typos, and a misspelt limit must not pass silently."""
        for field in sorted(set(self.data) - known):
            self.problem(field, f"unknown field; expected one of {', '.join(sorted(known))}")

    def value(self, field: str, *, optional: bool = False) -> Any:
        """The raw value, or None (with a problem unless `optional`) when absent or null."""
        raw = self.data.get(field, _MISSING)
        if raw is _MISSING or raw is None:
            if not optional:
                self.problem(field, "is required")
            return None
        return raw

    def text(
        self, field: str, *, pattern: str | None = None, hint: str = "", max_length: int = 200
    ) -> str | None:
        """A non-empty string without control characters, optionally matching `pattern`,
        which `hint` describes."""
        raw = self.value(field)
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw.strip():
            self.problem(field, "must be a non-empty string")
            return None
        if len(raw) > max_length:
            self.problem(field, f"must be at most {max_length} characters long")
            return None
        if not is_clean(raw):
            self.problem(
                field,
                "must not contain control characters (U+0000 to U+001F, U+007F to U+009F) "
                "or lone surrogates",
            )
            return None
        if pattern is not None and not re.fullmatch(pattern, raw):
            self.problem(field, f"must be {hint or pattern}, not {raw!r}")
            return None
        return raw

    def integer(
        self, field: str, *, minimum: int = 1, maximum: int, optional: bool = False
    ) -> int | None:
        """A JSON integer from `minimum` to `maximum` (true and false are not integers)."""
        raw = self.value(field, optional=optional)
        if raw is None:
            return None
        if not isinstance(raw, int) or isinstance(raw, bool):
            self.problem(field, f"must be a whole number, not {raw!r}")
            return None
        if raw < minimum:
            self.problem(field, f"must be at least {minimum}, not {raw}")
            return None
        if raw > maximum:
            self.problem(field, f"must be at most {maximum:,}")  # raw may run to 4,000 digits
            return None
        return raw

    def money(self, field: str, currency: str) -> Decimal | None:
        """A positive decimal string in the currency's minor unit, such as "79.00"."""
        amount = self.parsed(field, lambda text: parse_money(text, currency))
        if amount is not None and amount <= 0:
            self.problem(field, "must be greater than zero")
            return None
        return amount

    def instant(self, field: str, *, optional: bool = False) -> datetime | None:
        """An RFC 3339 UTC timestamp between 2000-01-01 and 2999-12-31."""
        moment = self.parsed(field, parse_instant, optional=optional)
        if moment is not None and not within_contract_years(moment):
            self.problem(field, f"must be {YEARS_HINT}, not {moment.date().isoformat()}")
            return None
        return moment

    def duration(self, field: str, *, optional: bool = False) -> timedelta | None:
        """An ISO 8601 duration such as "PT1H"."""
        return self.parsed(field, parse_duration, optional=optional)

    def parsed(self, field: str, parse: Callable[[str], T], *, optional: bool = False) -> T | None:
        """A string turned into a value by `parse`, whose ValueError becomes the problem."""
        raw = self.value(field, optional=optional)
        if raw is None:
            return None
        if not isinstance(raw, str):
            self.problem(field, f"must be a string, not {raw!r}")
            return None
        try:
            return parse(raw)
        except ValueError as error:
            self.problem(field, str(error))
            return None

    def object(self, field: str) -> FieldReader | None:
        """A reader for a nested JSON object."""
        raw = self.value(field)
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            self.problem(field, "must be a JSON object")
            return None
        return FieldReader(raw, self.name(field), self.problems)

    def objects(self, field: str) -> list[FieldReader] | None:
        """Readers for a non-empty JSON array of objects."""
        raw = self.value(field)
        if raw is None:
            return None
        if not isinstance(raw, list) or not raw:
            self.problem(field, "must be a non-empty JSON array")
            return None
        readers = []
        for index, item in enumerate(raw):
            if not isinstance(item, Mapping):
                self.problem(f"{field}[{index}]", "must be a JSON object")
                return None
            readers.append(FieldReader(item, f"{self.name(field)}[{index}]", self.problems))
        return readers
