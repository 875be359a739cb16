"""`groupbuy export`: every stored event as a flat row, to CSV or Parquet, page by page."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol
from uuid import UUID

from analysis.flatten import COLUMNS, Column, flatten
from domain.application import GroupBuying
from domain.campaign import Campaign
from infra.cli.common import (
    EXIT_CODES,
    CommandError,
    campaign_events,
    event_store,
    instant_argument,
    require_extra,
)
from infra.settings import Settings
from projections.wire import rfc3339

PAGE = 5000  # notifications read from the store at a time
ROW_GROUP = 100_000  # rows per Parquet row group: large enough to scan fast, small enough to hold


DESCRIPTION = """\
Every stored event, one row each: notification_id, campaign_id, originator_id, version,
type, timestamp, then the union of the events' fields (empty where an event has no such
field; pricing and lines as JSON text). Money is exact: decimal strings in CSV,
decimal(18, 6) in Parquet."""
EPILOG = f"""\
Values a Parquet column cannot hold (events stored before the contract's field limits, e.g.
money beyond decimal(18, 6) or an integer beyond int64) are written as null, and each such
row has the values as they were, as text, in a last column `out_of_range` (a JSON object by
column name); the number of such values is printed at the end. CSV writes every value as
text, as it is, except that a text cell beginning with =, +, -, @, a tab or a carriage
return gets a leading apostrophe (') so that a spreadsheet shows it rather than running it
as a formula, and text that is not valid Unicode is written with backslash escapes.

{EXIT_CODES}"""


def add_command(commands: Any) -> None:
    command = commands.add_parser(
        "export",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="every stored event as a flat row, to CSV or Parquet",
        description=DESCRIPTION,
    )
    command.add_argument("--format", required=True, choices=["csv", "parquet"])
    command.add_argument("--out", required=True, metavar="PATH", help="the file to write")
    command.add_argument("--campaign", metavar="ID", help="only this campaign's events")
    command.add_argument("--since", metavar="T", help="only events at or after T (RFC 3339)")
    command.set_defaults(run=export_events)


def export_events(settings: Settings, arguments: argparse.Namespace) -> int:
    since = instant_argument("--since", arguments.since) if arguments.since else None
    if arguments.format == "parquet":
        require_extra("pyarrow", "analyst", "groupbuy export --format parquet")
    out = Path(arguments.out)
    if out.is_dir():
        raise CommandError(f"--out {out} is a directory; give a file name")
    with event_store(settings.for_reading(), read_only=True) as app:
        only = None
        if arguments.campaign:
            campaign_events(app, arguments.campaign)  # an unknown id is an error, not 0 rows
            only = Campaign.create_id(arguments.campaign)
        count, notes = write_file(out, WRITERS[arguments.format], pages(app, only, since))
    print(f"{count} events written to {out}", file=sys.stderr)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    return 0


def write_file(
    out: Path, writer_class: type[Writer], rows: Iterator[list[dict[str, Any]]]
) -> tuple[int, list[str]]:
    """Write the rows into `out` through a partial file, which goes whatever goes wrong; the
    number of rows and the writer's notes on values it could not write as they were."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("wb") as file:
            writer = writer_class(file)
            count = 0
            try:
                for page in rows:
                    writer.write(page)
                    count += len(page)
            finally:
                writer.close()  # before the file: a Parquet writer left open writes later
        os.replace(partial, out)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise CommandError(f"cannot write {out}: {error.strerror or error}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count, writer.notes()


def pages(
    app: GroupBuying, only: UUID | None, since: datetime | None
) -> Iterator[list[dict[str, Any]]]:
    """Rows page by page, in notification order, so memory stays flat however long the log."""
    slugs: dict[UUID, str] = {}
    after = 0
    while notifications := app.recorder.select_notifications(after, PAGE, inclusive_of_start=False):
        rows = []
        for notification in notifications:
            originator = UUID(str(notification.originator_id))
            if only is not None and originator != only:
                continue
            event: Any = app.mapper.to_domain_event(notification)
            if since is not None and event.timestamp < since:
                continue
            slug = slugs.get(originator) or slugs.setdefault(originator, slug_of(app, originator))
            rows.append(flatten(notification.id, slug, event))
        if rows:
            yield rows
        after = notifications[-1].id


def slug_of(app: GroupBuying, originator: UUID) -> str:
    """The campaign_id, from the campaign's opening (the aggregate id cannot be reversed)."""
    (opened,) = app.events.get(originator, lte=1)
    assert isinstance(opened, Campaign.Opened)
    return opened.campaign_id


class Writer(Protocol):
    def __init__(self, file: IO[bytes]) -> None: ...

    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...

    def notes(self) -> list[str]:
        """What could not be written as it was, for the person exporting."""


# A spreadsheet runs a cell beginning with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class CsvWriter:
    """A header, then one line per event; instants as RFC 3339, nulls as empty fields."""

    def __init__(self, file: IO[bytes]) -> None:
        self.text = io.TextIOWrapper(file, encoding="utf-8", newline="")
        self.csv = csv.writer(self.text)
        self.csv.writerow([column.name for column in COLUMNS])
        self.escaped = 0  # text cells that were not valid Unicode

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.csv.writerows([[self.cell(c, row[c.name]) for c in COLUMNS] for row in rows])

    def close(self) -> None:
        self.text.flush()
        self.text.detach()

    def notes(self) -> list[str]:
        if not self.escaped:
            return []
        return [f"{self.escaped} text values were not valid Unicode: written with \\ escapes"]

    def cell(self, column: Column, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, datetime):
            return rfc3339(value)
        if isinstance(value, str):
            if not is_unicode(value):
                self.escaped += 1
                value = value.encode("utf-8", "backslashreplace").decode("utf-8")
            if column.kind == "text" and value.startswith(FORMULA_STARTS):
                return "'" + value
        return value


class ParquetWriter:
    """Row groups of ROW_GROUP rows, typed: int64, string, decimal(18, 6), timestamp UTC;
    a value its column cannot hold is null there, and text in the `out_of_range` column."""

    def __init__(self, file: IO[bytes]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        fields = [(column.name, arrow_type(column)) for column in COLUMNS]
        self.schema = pa.schema([*fields, (OUT_OF_RANGE, pa.string())])
        self.parquet = pq.ParquetWriter(file, self.schema)
        self.buffer: list[dict[str, Any]] = []
        self.out_of_range = 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.buffer.extend(self.fitted(row) for row in rows)
        if len(self.buffer) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            table = self.pa.Table.from_pylist(self.buffer, schema=self.schema)
            self.parquet.write_table(table, row_group_size=ROW_GROUP)
            self.buffer = []

    def close(self) -> None:
        self.flush()
        self.parquet.close()

    def notes(self) -> list[str]:
        if not self.out_of_range:
            return []
        return [
            f"{self.out_of_range} values did not fit their column's type: written as null, "
            f"and as text in the {OUT_OF_RANGE} column"
        ]

    def fitted(self, row: dict[str, Any]) -> dict[str, Any]:
        unfit = {c.name: row[c.name] for c in COLUMNS if not fits(c, row[c.name])}
        self.out_of_range += len(unfit)
        shown = {name: as_text(value) for name, value in unfit.items()}
        return row | dict.fromkeys(unfit) | {OUT_OF_RANGE: json.dumps(shown) if unfit else None}


OUT_OF_RANGE = "out_of_range"
INT64 = range(-(2**63), 2**63)
# Money has at most 12 digits before the point and 6 after (domain/money.py).
MONEY_LIMIT = Decimal(10) ** 12
MONEY_STEP = Decimal("0.000001")


def arrow_type(column: Column) -> Any:
    import pyarrow as pa

    types = {
        "int": pa.int64(),
        "text": pa.string(),
        "money": pa.decimal128(18, 6),
        "instant": pa.timestamp("us", tz="UTC"),
        "json": pa.string(),
    }
    return types[column.kind]


def fits(column: Column, value: Any) -> bool:
    """Whether `column`'s Parquet type holds `value` (null always fits)."""
    if value is None:
        return True
    if column.kind == "instant":
        return isinstance(value, datetime) and has_utc_form(value)
    if column.kind == "int":
        return type(value) is int and value in INT64
    if column.kind == "money":
        return isinstance(value, Decimal) and fits_money(value)
    return isinstance(value, str) and is_unicode(value)


def fits_money(value: Decimal) -> bool:
    try:
        return value.is_finite() and abs(value) < MONEY_LIMIT and value % MONEY_STEP == 0
    except ArithmeticError:  # too many digits to divide in the context's precision
        return False


def has_utc_form(value: datetime) -> bool:
    """Whether the instant is within datetime's range in UTC (year 9999 at -14:00 is not:
    Parquet would hold it, but Python, pandas included, could not read it back)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        return False
    return True


def is_unicode(value: str) -> bool:
    """Whether `value` has a UTF-8 form (a lone surrogate has none)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def as_text(value: Any) -> str:
    """An out-of-range value as text: exact, and ASCII once in JSON."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


WRITERS: dict[str, type[Writer]] = {
    "csv": CsvWriter,
    "parquet": ParquetWriter,
}
