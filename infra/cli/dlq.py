"""`groupbuy dlq list` and `dlq redrive`: the dead letters, and sending chosen ones back to
their site's orders topic after a fix, each at most once."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from psycopg.sql import SQL, Identifier
from rich.console import Console
from rich.table import Table

from infra.adapters import kafka_clients
from infra.adapters.topics import Topics
from infra.cli.common import (
    EXIT_CODES,
    INVALID,
    CommandError,
    connect_postgres,
    instant_argument,
    require_kafka,
)
from infra.cli.output import plain
from infra.settings import Settings

REDRIVEN_TABLE = "groupbuying_redriven"  # each dead letter sent back, by its DLQ position
ADDED = ("error", "source.topic", "source.partition", "source.offset")  # ingest's headers
PREVIEW_BYTES = 120


@dataclass(frozen=True)
class DeadLetter:
    """One record of the DLQ: where it is, why it is there, and what it was."""

    partition: int
    offset: int
    at: datetime  # when the DLQ took it
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str:
        found = [value for key, value in self.headers if key == name]
        return found[-1].decode("utf-8", "backslashreplace") if found else ""

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def own_headers(self) -> list[tuple[str, bytes]]:
        """The record's headers as its site sent them, without the four ingest added."""
        return [(key, value) for key, value in self.headers if key not in ADDED]

    def to_json(self) -> dict[str, Any]:
        return {
            "dlq": self.position,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "error": self.header("error"),
            "source": {
                "topic": self.header("source.topic"),
                "partition": self.header("source.partition"),
                "offset": self.header("source.offset"),
            },
            "key": None if self.key is None else safe(self.key),
            "preview": preview(self.value),
            "bytes": len(self.value),
        }


def safe(raw: bytes) -> str:
    """Bytes shown as text a terminal cannot be fooled by: invalid UTF-8 and control
    characters escaped."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def preview(value: bytes) -> str:
    shown = safe(value[:PREVIEW_BYTES])
    return shown + ("…" if len(value) > PREVIEW_BYTES else "")


def add_commands(commands: Any) -> None:
    summary = "inspect dead letters; send chosen ones back to their orders topic after a fix"
    dlq = commands.add_parser("dlq", help=summary, description=summary, epilog=EXIT_CODES)
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every dead letter, oldest first", epilog=EXIT_CODES)
    listing.add_argument(
        "--since", metavar="T", help='only those from T on, e.g. "2026-12-01T00:00:00Z"'
    )
    listing.add_argument("--json", action="store_true", help="a JSON object a line")
    listing.set_defaults(run=list_letters)
    redrive = actions.add_parser(
        "redrive",
        help="send the dead letters at these DLQ positions back to their orders topic, "
        "each at most once",
        epilog=EXIT_CODES,
    )
    redrive.add_argument(
        "--offsets",
        metavar="P:O[,P:O...]",
        required=True,
        help="DLQ positions (partition:offset) as `dlq list` shows them",
    )
    redrive.add_argument("--json", action="store_true", help="a JSON object a line")
    redrive.set_defaults(run=redrive_letters)


def list_letters(settings: Settings, arguments: argparse.Namespace) -> int:
    require_kafka(settings)
    since = instant_argument("--since", arguments.since) if arguments.since else None
    letters = list(read_letters(settings, since))
    if arguments.json:
        for letter in letters:
            print(json.dumps(letter.to_json(), ensure_ascii=False))
        return 0
    table = Table(title=f"{len(letters)} dead letters", show_lines=False)
    for column in ("dlq", "at", "source", "error", "preview"):
        table.add_column(column)
    for letter in letters:
        shown = letter.to_json()
        source = shown["source"]
        table.add_row(
            shown["dlq"],
            shown["at"],
            plain(f"{source['topic']} {source['partition']}:{source['offset']}"),
            plain(shown["error"]),
            plain(shown["preview"]),
        )
    Console().print(table)
    return 0


def redrive_letters(settings: Settings, arguments: argparse.Namespace) -> int:
    require_kafka(settings)
    wanted = positions(arguments.offsets)
    found = letters_at(settings, wanted)
    missing = [p for p in wanted if p not in found]
    if missing:
        raise CommandError(
            f"no dead letter at {', '.join(missing)} (see `groupbuy dlq list`)", INVALID
        )
    topics = Topics(settings.topic_prefix)
    for position in wanted:
        source = found[position].header("source.topic")
        if topics.site_of_orders(source) is None:
            raise CommandError(
                f"the dead letter at {position} came from {source!r}, no site's orders topic",
                INVALID,
            )
    table = Identifier(settings.database_schema, REDRIVEN_TABLE)
    with connect_postgres(settings) as conn, closing(kafka_clients.producer(settings)) as producer:
        conn.execute(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (dlq_partition integer, dlq_offset bigint, "
                "source_topic text NOT NULL, redriven_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (dlq_partition, dlq_offset))"
            ).format(table)
        )
        conn.commit()
        for position in wanted:
            letter = found[position]
            source = letter.header("source.topic")
            # The row and the send stand or fall together: the row commits only once Kafka
            # has the record, and a row already there means it was sent before.
            with conn.transaction():
                row = conn.execute(
                    SQL(
                        "INSERT INTO {} (dlq_partition, dlq_offset, source_topic) "
                        "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING redriven_at"
                    ).format(table),
                    (letter.partition, letter.offset, source),
                ).fetchone()
                if row is not None:
                    sent = producer.send(
                        source, key=letter.key, value=letter.value, headers=letter.own_headers()
                    )
                    try:
                        metadata = sent.get(timeout=30)
                    except KafkaError as error:
                        raise CommandError(f"{position}: Kafka did not take it: {error}") from None
            report(arguments, position, source, None if row is None else metadata)
    return 0


def report(arguments: argparse.Namespace, position: str, source: str, metadata: Any) -> None:
    if arguments.json:
        sent = None if metadata is None else f"{metadata.partition}:{metadata.offset}"
        print(json.dumps({"dlq": position, "topic": source, "sent": sent}))
    elif metadata is None:
        print(f"{position}: redriven before; not sent again")
    else:
        print(f"{position}: sent to {source} at {metadata.partition}:{metadata.offset}")


def positions(text: str) -> list[str]:
    """`P:O,P:O` as a list of `P:O`, each checked, each once, in the order given."""
    chosen: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        partition, _, offset = part.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise CommandError(f"--offsets: {part!r} is not partition:offset, e.g. 0:42", INVALID)
        position = f"{int(partition)}:{int(offset)}"
        if position not in chosen:
            chosen.append(position)
    if not chosen:
        raise CommandError("--offsets names no position", INVALID)
    return chosen


def read_letters(settings: Settings, since: datetime | None) -> Iterator[DeadLetter]:
    """The DLQ's committed records, oldest first (from `since` on, if given), up to its end
    when asked."""
    topic = Topics(settings.topic_prefix).orders_dlq
    with closing(kafka_clients.reader(settings, enable_auto_commit=False)) as reader:
        numbers = reader.partitions_for_topic(topic)
        if not numbers:
            return  # no DLQ topic yet: nothing was ever dead-lettered
        partitions = [TopicPartition(topic, n) for n in sorted(numbers)]
        reader.assign(partitions)
        ends = reader.end_offsets(partitions)
        _seek(reader, partitions, since)
        left = {p for p in partitions if reader.position(p) < ends[p]}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for partition, records in reader.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset < ends[partition]:
                        yield _letter(record)
                if reader.position(partition) >= ends[partition]:
                    left.discard(partition)
        if left:
            raise CommandError(f"the DLQ was not read to its end in 60 s: {sorted(map(str, left))}")


def letters_at(settings: Settings, wanted: list[str]) -> dict[str, DeadLetter]:
    """The dead letters at the DLQ positions `wanted` (`P:O`), each read by a seek to it:
    a position past the end, or holding no record (a transaction marker), finds none."""
    topic = Topics(settings.topic_prefix).orders_dlq
    found: dict[str, DeadLetter] = {}
    with closing(kafka_clients.reader(settings, enable_auto_commit=False)) as reader:
        numbers = reader.partitions_for_topic(topic) or set()
        targets = [
            (TopicPartition(topic, int(p)), int(o))
            for p, o in (position.split(":") for position in wanted)
            if int(p) in numbers
        ]
        partitions = sorted({partition for partition, _ in targets})
        if not partitions:
            return found
        reader.assign(partitions)
        ends = reader.end_offsets(partitions)
        for partition, offset in targets:
            if offset >= ends[partition]:
                continue
            reader.pause(*partitions)
            reader.resume(partition)
            reader.seek(partition, offset)
            deadline = time.monotonic() + 30
            while reader.position(partition) <= offset and time.monotonic() < deadline:
                for record in reader.poll(timeout_ms=500).get(partition, []):
                    if record.offset == offset:
                        found[f"{partition.partition}:{offset}"] = _letter(record)
    return found


def _seek(reader: KafkaConsumer, partitions: list[TopicPartition], since: datetime | None) -> None:
    if since is None:
        reader.seek_to_beginning(*partitions)
        return
    found = reader.offsets_for_times({p: int(since.timestamp() * 1000) for p in partitions})
    for partition in partitions:
        at = found.get(partition)
        if at is None:
            reader.seek_to_end(partition)
        else:
            reader.seek(partition, at.offset)


def _letter(record: Any) -> DeadLetter:
    headers = [(key, value or b"") for key, value in record.headers]
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        at=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        key=record.key,
        value=record.value or b"",
        headers=headers,
    )
