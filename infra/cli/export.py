"""`groupbuy export`: every stored event as a flat row, to CSV or Parquet, page by page."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Iterator
from datetime import datetime
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
)
from infra.settings import Settings
from projections.wire import rfc3339

PAGE = 5000  # notifications read from the store at a time
ROW_GROUP = 100_000  # rows per Parquet row group: large enough to scan fast, small enough to hold


def add_command(commands: Any) -> None:
    command = commands.add_parser(
        "export",
        epilog=EXIT_CODES,
        help="every stored event as a flat row, to CSV or Parquet",
        description="Every stored event, one row each: notification_id, campaign_id, "
        "originator_id, version, type, timestamp, then the union of the events' fields "
        "(empty where an event has no such field; pricing and lines as JSON text). Money is "
        "exact: decimal strings in CSV, decimal(18, 6) in Parquet.",
    )
    command.add_argument("--format", required=True, choices=["csv", "parquet"])
    command.add_argument("--out", required=True, metavar="PATH", help="the file to write")
    command.add_argument("--campaign", metavar="ID", help="only this campaign's events")
    command.add_argument("--since", metavar="T", help="only events at or after T (RFC 3339)")
    command.set_defaults(run=export_events)


def export_events(settings: Settings, arguments: argparse.Namespace) -> int:
    since = instant_argument("--since", arguments.since) if arguments.since else None
    out = Path(arguments.out)
    if out.is_dir():
        raise CommandError(f"--out {out} is a directory; give a file name")
    partial = out.with_name(f".{out.name}.partial")
    with event_store(settings) as app:
        only = None
        if arguments.campaign:
            campaign_events(app, arguments.campaign)  # an unknown id is an error, not 0 rows
            only = Campaign.create_id(arguments.campaign)
        try:
            with partial.open("wb") as file:
                writer = WRITERS[arguments.format](file)
                count = 0
                for rows in pages(app, only, since):
                    writer.write(rows)
                    count += len(rows)
                writer.close()
            os.replace(partial, out)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise CommandError(f"cannot write {out}: {error.strerror or error}") from None
    print(f"{count} events written to {out}", file=sys.stderr)
    return 0


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
    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class CsvWriter:
    """A header, then one line per event; instants as RFC 3339, nulls as empty fields."""

    def __init__(self, file: IO[bytes]) -> None:
        import io

        self.text = io.TextIOWrapper(file, encoding="utf-8", newline="")
        self.csv = csv.writer(self.text)
        self.csv.writerow([column.name for column in COLUMNS])

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.csv.writerows([[cell(row[c.name]) for c in COLUMNS] for row in rows])

    def close(self) -> None:
        self.text.flush()
        self.text.detach()


def cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return rfc3339(value)
    return value


class ParquetWriter:
    """Row groups of ROW_GROUP rows, typed: int64, string, decimal(18, 6), timestamp UTC."""

    def __init__(self, file: IO[bytes]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema([(column.name, arrow_type(column)) for column in COLUMNS])
        self.parquet = pq.ParquetWriter(file, self.schema)
        self.buffer: list[dict[str, Any]] = []

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.buffer.extend(rows)
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


def arrow_type(column: Column) -> Any:
    import pyarrow as pa

    types = {
        "int": pa.int64(),
        "text": pa.string(),
        # Money has at most 12 digits before the point and 6 after (domain/money.py).
        "money": pa.decimal128(18, 6),
        "instant": pa.timestamp("us", tz="UTC"),
        "json": pa.string(),
    }
    return types[column.kind]


WRITERS: dict[str, type[CsvWriter] | type[ParquetWriter]] = {
    "csv": CsvWriter,
    "parquet": ParquetWriter,
}
