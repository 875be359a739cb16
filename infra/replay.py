"""Read models rebuilt from zero beside the live ones (blue/green), compared, and swapped in.

A rebuild goes into a schema of its own, so the live read models keep serving while it runs.
`compare` lists what differs between the two sets; `swap` makes the rebuilt set the live one
in one transaction, and the running projectors notice it by their generation fence
(consumers/projector.py) and carry on from the positions the swap left for them.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import queue
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from kafka import KafkaConsumer, TopicPartition
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from consumers.batch import position_name
from consumers.positions import PositionTable
from consumers.projector import GENERATION
from domain.application import GroupBuying
from domain.campaign import Campaign
from infra.app import open_app, recorder_of
from infra.settings import Settings
from projections.live import LiveProjection
from projections.read_models import ReadModelTables
from projections.rebuild import ENDING_TYPES, FLUSH_ROWS, Endings, ReadModelBuild
from projections.wire import MESSAGE_TYPES, CampaignEvent, decode, encode

PAGE = 10_000  # events fetched from PostgreSQL at a time
# The tables of one set, in the order a swap locks them: the projector touches the campaigns
# table first in every transaction and the positions last, so nobody waits in a circle.
TABLES = ("campaigns", "campaign_sites", "price_history", "commitments", "positions")
COMPARED = ("campaigns", "campaign_sites", "price_history", "commitments")

Progress = Callable[[int, int], None]  # (events read so far, events to read)


@dataclass
class Rebuilt:
    """A rebuilt set of read models, and how far into its source it got."""

    tables: ReadModelTables
    source: str
    events: int = 0  # read from the source
    applied: int = 0  # changed the read models (the rest were duplicates)
    last_notification_id: int = 0  # from the event store
    positions: dict[str, int] = field(default_factory=dict)  # from Kafka
    unreadable: int = 0  # Kafka messages that were not campaign events


class StoredEvents:
    """The event store's rows as campaign events, oldest first.

    The state is read straight from eventsourcing's JSON, without building domain objects;
    a row this cannot read so (an old `class_version` to upcast, a type it does not know)
    goes through the library's mapper instead.
    """

    def __init__(self, app: GroupBuying, share: tuple[int, int] = (0, 1)) -> None:
        """`share` (k, n): only the campaigns whose id falls in the k-th of n shares."""
        self.app = app
        self.share = share
        recorder = recorder_of(app)
        self.table = Identifier(recorder.datastore.schema, recorder.events_table_name)
        self.types = {get_topic(cls): name for cls, name in MESSAGE_TYPES.items()}
        self.versions = {get_topic(cls): getattr(cls, "class_version", 1) for cls in MESSAGE_TYPES}
        self.slugs: dict[str, str] = {}  # originator id (as text) -> campaign_id

    def last_notification_id(self) -> int:
        with self._connection() as conn:
            cursor = conn.cursor(row_factory=tuple_row)
            last = cursor.execute(
                SQL("SELECT max(notification_id) FROM {}").format(self.table)
            ).fetchone()
        return int(last[0]) if last and last[0] is not None else 0

    def know(self, campaign_ids: Iterator[str] | list[str]) -> None:
        """Campaigns opened before the events to be read (their ids derive from their slugs)."""
        self.slugs.update({str(Campaign.create_id(slug)): slug for slug in campaign_ids})

    def read(
        self, after: int, upto: int | None = None, types: Sequence[str] | None = None
    ) -> Iterator[CampaignEvent]:
        """Each event after notification id `after`, up to `upto`, of `types` if given."""
        topics = None if types is None else [t for t, n in self.types.items() if n in types]
        query = SQL(
            "SELECT originator_id::text, originator_version, topic, state FROM {} "
            "WHERE notification_id > %s AND notification_id <= %s "
            "AND (%s::text[] IS NULL OR topic = ANY(%s)) "
            "AND mod(get_byte(uuid_send(originator_id), 15), %s) = %s ORDER BY notification_id"
        ).format(self.table)
        k, n = self.share
        upto = upto if upto is not None else 2**63 - 1
        for page in self._pages(query, (after, upto, topics, topics, n, k)):
            for originator_id, version, topic, state in page:
                yield self.event(originator_id, version, topic, state)

    def _pages(self, query: Composed, params: tuple[Any, ...]) -> Iterator[list[tuple[Any, ...]]]:
        """Pages of rows; the next is fetched on a thread of its own while this one is used."""
        pages: queue.Queue[list[tuple[Any, ...]] | BaseException | None] = queue.Queue(2)

        def fetch() -> None:
            try:
                with (
                    self._connection() as conn,
                    conn.transaction(),
                    conn.cursor(
                        name=f"replay_{secrets.token_hex(4)}", row_factory=tuple_row
                    ) as cur,
                ):
                    cur.execute(query, params)
                    while rows := cur.fetchmany(PAGE):
                        pages.put(rows)
                pages.put(None)
            except BaseException as error:  # handed to the reading thread, raised there
                pages.put(error)

        threading.Thread(target=fetch, name="replay-reader", daemon=True).start()
        while (page := pages.get()) is not None:
            if isinstance(page, BaseException):
                raise page
            yield page

    def _connection(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        return recorder_of(self.app).datastore.get_connection()

    def event(self, originator_id: str, version: int, topic: str, state: bytes) -> CampaignEvent:
        fields = _STATE.decode(state.decode())
        if fields.get("class_version", 1) != self.versions.get(topic) or _NEEDS_MAPPER in fields:
            return self._through_mapper(originator_id, version, topic, state)
        if topic not in self.types:
            raise ValueError(f"unknown event topic {topic!r}")
        occurred_at = datetime.fromisoformat(fields.pop("timestamp"))
        fields.pop("originator_topic", None)
        if "campaign_id" in fields:
            self.slugs[originator_id] = fields.pop("campaign_id")
        return CampaignEvent(
            self.types[topic], self.slugs[originator_id], version, occurred_at, fields
        )

    def _through_mapper(
        self, originator_id: str, version: int, topic: str, state: bytes
    ) -> CampaignEvent:
        stored = StoredEvent(UUID(originator_id), version, topic, state)
        event = self.app.mapper.to_domain_event(stored)
        if isinstance(event, Campaign.Opened):
            self.slugs[originator_id] = event.campaign_id
        return decode(encode(event, self.slugs[originator_id]))


_NEEDS_MAPPER = "_needs_mapper_"


def _plain(value: dict[str, Any]) -> dict[str, Any] | str:
    """eventsourcing's wrapped values as the campaign-events topic writes them."""
    kind = value.get("_type_")
    if kind is None:
        return value
    data = value["_data_"]
    if kind == "decimal_str":
        return str(data)
    if kind == "datetime_iso" and isinstance(data, str) and data.endswith("+00:00"):
        return data.removesuffix("+00:00") + "Z"
    return {_NEEDS_MAPPER: True}  # seen at the top level, since json.loads works inside out


# One decoder for every row (json.loads would build one a call): 5 µs for a commitment.
_STATE = json.JSONDecoder(object_hook=_plain)


def rebuild_from_store(
    settings: Settings,
    conn: psycopg.Connection[Any],
    tables: ReadModelTables,
    progress: Progress,
    workers: int = 1,
) -> Rebuilt:
    """Every stored event, folded into `tables` (created here, in a schema that must exist).

    With several `workers`, each is a process of its own folding a share of the campaigns
    (a campaign's events all go to one), so that the decoding runs on every core.
    """
    with conn.transaction():
        conn.execute(tables.create_statement())
    app = open_app(settings)
    try:
        last = StoredEvents(app).last_notification_id()
    finally:
        app.close()
    if workers == 1:
        done = [_fold_share(settings, tables, last, (0, 1), _Counter(progress, last))]
    else:
        done = _in_processes(settings, tables, last, workers, progress)
    events, applied = (sum(counts) for counts in zip(*done, strict=True))
    progress(events, events)
    return Rebuilt(tables, "store", events, applied, last_notification_id=last)


class _Counter:
    """Adds up the events read, for the progress callback."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, read: int) -> None:
        self.done += read
        self.progress(self.done, self.total)


def _fold_share(
    settings: Settings,
    tables: ReadModelTables,
    upto: int,
    share: tuple[int, int],
    report: Callable[[int], None],
) -> tuple[int, int]:
    """Fold one share of the campaigns' events up to `upto`; (events read, events applied)."""
    app = open_app(settings)
    try:
        events = StoredEvents(app, share)
        endings = Endings()  # a first, short pass: each commitment is then written once
        for event in events.read(0, upto, ENDING_TYPES):
            endings.note(event)
        build = ReadModelBuild(tables, endings)
        read = 0
        with (
            psycopg.connect(settings.database_url) as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            for event in events.read(0, upto):
                read += 1
                build.apply(event)
                if read % FLUSH_ROWS == 0:
                    build.flush(cur)
                    report(FLUSH_ROWS)
            build.finish(cur)
        report(read % FLUSH_ROWS)
        return read, build.applied
    finally:
        app.close()


def _in_processes(
    settings: Settings, tables: ReadModelTables, upto: int, workers: int, progress: Progress
) -> list[tuple[int, int]]:
    """`_fold_share` in `workers` processes, their progress and results read from a queue."""
    context = multiprocessing.get_context("spawn")  # no forked copy of open connections
    messages: Any = context.Queue()
    processes = [
        context.Process(
            target=_share_process,
            args=(settings, tables, upto, (k, workers), messages),
            name=f"groupbuy-replay-{k}",
        )
        for k in range(workers)
    ]
    for process in processes:
        process.start()
    counter, done = _Counter(progress, upto), list[tuple[int, int]]()
    try:
        while len(done) < workers:
            try:
                kind, *values = messages.get(timeout=1)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in processes):
                    raise RuntimeError("a replay worker process died") from None
                continue
            if kind == "failed":
                raise RuntimeError(f"a replay worker failed: {values[0]}")
            if kind == "read":
                counter(values[0])
            else:
                done.append((values[0], values[1]))
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return done


def _share_process(
    settings: Settings, tables: ReadModelTables, upto: int, share: tuple[int, int], messages: Any
) -> None:
    try:
        events, applied = _fold_share(
            settings, tables, upto, share, lambda read: messages.put(("read", read))
        )
        messages.put(("done", events, applied))
    except BaseException as error:  # reported to the parent, which raises it
        messages.put(("failed", repr(error)))


def rebuild_from_kafka(
    settings: Settings,
    topic: str,
    conn: psycopg.Connection[Any],
    tables: ReadModelTables,
    progress: Progress,
) -> Rebuilt:
    """Every message of the campaign-events topic up to its end now, folded into `tables`."""
    rebuilt = Rebuilt(tables, "kafka")
    build = ReadModelBuild(tables)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_poll_records=5000,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    try:
        known = consumer.partitions_for_topic(topic)
        if not known:
            raise LookupError(f"Kafka has no topic {topic!r}")
        partitions = [TopicPartition(topic, p) for p in known]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = {p: end for p, end in consumer.end_offsets(partitions).items() if end > 0}
        starts = consumer.beginning_offsets(list(ends))
        total = sum(end - starts[p] for p, end in ends.items())
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(tables.create_statement())
            while any(consumer.position(p) < end for p, end in ends.items()):
                polled = consumer.poll(timeout_ms=1000)
                for partition, records in polled.items():
                    name = position_name(partition.topic, partition.partition)
                    for record in records:
                        if record.offset >= ends.get(partition, 0):
                            continue  # written after the rebuild started: the projector's
                        rebuilt.positions[name] = record.offset
                        rebuilt.events += 1
                        try:
                            event = decode(record.value)
                        except (ValueError, KeyError, TypeError):
                            rebuilt.unreadable += 1  # as the projector does: skipped, counted
                            continue
                        build.apply(event)
                progress(rebuilt.events, total)
                build.flush(cur)
            build.finish(cur)
            positions = PositionTable(tables.positions)
            for name, offset in rebuilt.positions.items():
                positions.start(cur, name, offset)
    finally:
        consumer.close(autocommit=False)
    rebuilt.applied = build.applied
    return rebuilt


def fresh_tables(conn: psycopg.Connection[Any], live: ReadModelTables) -> ReadModelTables:
    """A new, empty schema beside the live read models, for a rebuild."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    schema = f"{live.schema}_rebuild_{stamp}_{secrets.token_hex(2)}"
    conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
    return ReadModelTables(schema, live.prefix)


@dataclass
class Comparison:
    """Rows that differ between two sets of read models, campaign by campaign."""

    compared: int = 0  # campaigns at the same version in both sets
    skipped: list[str] = field(default_factory=list)  # campaigns seen further in one set
    differences: list[str] = field(default_factory=list)


def compare(
    conn: psycopg.Connection[Any], live: ReadModelTables, rebuilt: ReadModelTables
) -> Comparison:
    """Compare the campaigns both sets have seen up to the same version, row by row.

    While the services run, the live set may be ahead of the rebuild or behind it; such a
    campaign is listed as skipped, not as a difference.
    """
    versions = SQL("SELECT campaign_id, version FROM {}")
    live_at = dict(conn.execute(versions.format(live.campaigns)).fetchall())
    rebuilt_at = dict(conn.execute(versions.format(rebuilt.campaigns)).fetchall())
    result = Comparison()
    same = sorted(c for c in live_at.keys() & rebuilt_at.keys() if live_at[c] == rebuilt_at[c])
    result.compared = len(same)
    for campaign_id in sorted(live_at.keys() | rebuilt_at.keys()):
        at = (live_at.get(campaign_id), rebuilt_at.get(campaign_id))
        if at[0] != at[1]:
            result.skipped.append(f"{campaign_id}: live at v{at[0]}, rebuilt at v{at[1]}")
    only = SQL(
        "SELECT * FROM {} WHERE campaign_id = ANY(%(same)s) EXCEPT SELECT * FROM {} ORDER BY 1, 2"
    )
    for name in COMPARED:
        for here, there, label in ((live, rebuilt, "live"), (rebuilt, live, "rebuilt")):
            query = only.format(here.table(name), there.table(name))
            for row in conn.execute(query, {"same": same}):
                result.differences.append(f"{here.prefix}{name}: only {label} has {_row(row)}")
    return result


def swap(
    conn: psycopg.Connection[Any], app: GroupBuying, live: ReadModelTables, rebuilt: Rebuilt
) -> tuple[str, int]:
    """Make `rebuilt` the live set; (the schema the old set was moved to, events caught up).

    In one transaction: lock the live tables (the projectors wait), apply what was stored
    since the rebuild read the store, give the rebuilt set the positions to go on from and
    the next generation, and trade the tables' schemas.
    """
    retired = f"{live.schema}_retired_{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
    with conn.transaction(), conn.cursor() as cur:
        present = [name for name in TABLES if _exists(cur, live.table(name))]
        if present:
            tables = SQL(", ").join(live.table(name) for name in present)
            cur.execute(SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(tables))
        stored = {}
        if "positions" in present:
            stored = dict(cur.execute(SQL("SELECT * FROM {}").format(live.positions)).fetchall())
        generation = stored.pop(GENERATION, 0)
        positions = PositionTable(rebuilt.tables.positions)
        caught_up = 0
        if rebuilt.source == "store":
            # A rebuild from Kafka has positions of its own; one from the store goes on from
            # the projectors' positions, with what the store gained since it was read.
            for name, offset in stored.items():
                positions.start(cur, name, offset)
            caught_up = _catch_up(cur, app, rebuilt)
        positions.start(cur, GENERATION, generation + 1)
        cur.execute(SQL("CREATE SCHEMA {}").format(Identifier(retired)))
        for name in present:
            _move(cur, live.table(name), retired)
        for name in TABLES:
            _move(cur, rebuilt.tables.table(name), live.schema)
        cur.execute(SQL("DROP SCHEMA {}").format(Identifier(rebuilt.tables.schema)))
    return retired, caught_up


def _catch_up(cur: psycopg.Cursor[Any], app: GroupBuying, rebuilt: Rebuilt) -> int:
    """Events stored after the rebuild read the store, applied as the projector applies them."""
    projection = LiveProjection(rebuilt.tables)
    events = StoredEvents(app)
    known = cur.execute(SQL("SELECT campaign_id FROM {}").format(rebuilt.tables.campaigns))
    events.know([campaign_id for (campaign_id,) in known.fetchall()])
    return sum(projection.apply(cur, event) for event in events.read(rebuilt.last_notification_id))


def _move(cur: psycopg.Cursor[Any], table: Identifier, schema: str) -> None:
    cur.execute(SQL("ALTER TABLE {} SET SCHEMA {}").format(table, Identifier(schema)))


def _exists(cur: psycopg.Cursor[Any], table: Identifier) -> bool:
    row = cur.execute(SQL("SELECT to_regclass(%s)"), (table.as_string(cur),)).fetchone()
    return row is not None and row[0] is not None


def _row(row: tuple[Any, ...]) -> str:
    return "(" + ", ".join("null" if v is None else str(v) for v in row) + ")"


def replay_into(settings: Settings, tables: ReadModelTables, workers: int = 1) -> int:
    """Rebuild `tables` from the event store; the number of events that changed them."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return rebuild_from_store(settings, conn, tables, lambda *_: None, workers).applied


def table_rows(conn: psycopg.Connection[Any], tables: ReadModelTables) -> dict[str, list[Any]]:
    """Every read-model row, in a stable order, for comparing two sets of tables."""
    names = {
        "campaigns": tables.campaigns,
        "sites": tables.sites,
        "prices": tables.prices,
        "commitments": tables.commitments,
    }
    return {
        name: conn.execute(SQL("SELECT * FROM {} ORDER BY 1, 2").format(table)).fetchall()
        for name, table in names.items()
    }
