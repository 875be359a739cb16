"""`groupbuy clock`: closes each campaign at its deadline, once ingestion has caught up to it."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.utils import get_topic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner import murmur2
from psycopg.rows import tuple_row

from consumers.batch import position_name
from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.errors import CampaignError
from infra.adapters import kafka_clients, metrics
from infra.adapters.app import open_app, recorder_of
from infra.adapters.logs import where
from infra.adapters.topics import Topics
from infra.settings import Settings

log = logging.getLogger(__name__)
TICK = 0.2  # seconds: a deadline is acted on within this much of being due and ingested
HELD_WARNING_AFTER = 5.0  # seconds a partition holds back due campaigns before the log says so
HELD_WARNING_EVERY = 30.0  # seconds between two such warnings about one partition
UNKNOWN_TOPIC_RETRY = 5.0  # seconds before asking Kafka again about an orders topic it lacked
READ_BUDGET = 1.0  # seconds a tick may spend reading partitions past transaction markers
IDLE_POLLS = 3  # polls that move no partition before a read gives up until the next tick
# The timestamp the clock's probe is sent with: a topic with broker append time replaces it,
# so getting it back means the clock topic keeps the producer's time.
PROBE_TIMESTAMP_MS = 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)
SCHEDULE_EVENTS = [
    get_topic(e) for e in (Campaign.Opened, Campaign.DeadlineExtended, Campaign.Closed)
]

Now = Callable[[], datetime]
Due = list[tuple[str, datetime]]  # campaign ids and their deadlines, earliest first


def host_now() -> datetime:
    return datetime.now(UTC)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of `partitions` that a producer gives a record keyed `key`.

    kafka-python's DefaultPartitioner (kafka/partitioner/default.py) and the Java client's
    default use this murmur2 hash, and so do librdkafka's `murmur2_random` and `murmur2`
    partitioners; librdkafka's default, `consistent_random`, hashes with CRC32 instead and
    puts keys elsewhere. Kafka numbers a topic's partitions from 0, so the index is the
    partition.
    """
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def next_offset(stored: int | None) -> int:
    """The first offset after a stored position (None: nothing applied yet)."""
    return 0 if stored is None else stored + 1


def millis(instant: datetime) -> int:
    """`instant` in whole milliseconds, rounded up: a record's millisecond timestamp is at or
    after `instant` exactly when it is at or after this."""
    return -((EPOCH - instant) // MILLISECOND)


@dataclass
class Scan:
    """What a reader that sees what ingestion sees (read_committed) found after `stored`."""

    stored: int | None
    checked_to: int  # past `stored`, no record before this offset is visible to ingestion
    first: tuple[int, int] | None = None  # offset and append time (ms) of the first that is

    def through(self, end: int) -> float:
        """The instant (ms) before which every visible record after `stored` is known
        applied: none found up to `end`, or the first unapplied one's append time."""
        if self.first is not None:
            return self.first[1]
        return math.inf if self.checked_to >= end else -math.inf


@dataclass(frozen=True)
class Progress:
    """How far ingestion got in one orders partition, read after the broker's time passed
    every due deadline."""

    stored: int | None  # the last offset ingestion applied (None: none yet)
    end: int  # the partition's end, committed or not
    first_late: tuple[int, int] | None  # offset and time (ms) of the first record at or
    # after the partition's earliest due deadline (None: there is none up to `end`)
    scan: Scan | None = None

    @property
    def needed(self) -> int:
        """The offset ingestion must reach for the earliest due deadline."""
        return self.end if self.first_late is None else self.first_late[0]


def applied_through(progress: Progress) -> float:
    """The instant (ms) before which every order of the partition is applied.

    Everything is applied if ingestion reached the end, which was read after the broker's
    time passed the due deadlines (so later records were appended after them). Every record
    before the first one at or after the earliest due deadline D is applied if ingestion
    reached it, and that record's time T holds for deadlines up to T too, since no record
    before it is at or after D. Otherwise only reading tells: markers of transactions,
    aborted batches and deleted records take offsets that ingestion never sees as records.
    """
    if next_offset(progress.stored) >= progress.end:
        return math.inf
    through = -math.inf
    first_late = progress.first_late
    if first_late is not None and next_offset(progress.stored) >= first_late[0]:
        through = first_late[1]
    if progress.scan is not None:
        through = max(through, progress.scan.through(progress.end))
    return through


def ready_campaigns(
    due: Due,
    carriers: dict[str, list[TopicPartition]],
    through: dict[TopicPartition, float],
) -> list[str]:
    """The due campaigns whose deadline every partition carrying their key is through."""
    return [
        campaign_id
        for campaign_id, deadline in due
        if all(millis(deadline) <= through[tp] for tp in carriers[campaign_id])
    ]


def offset_and_time(found: Any) -> tuple[int, int] | None:
    """kafka-python's OffsetAndTimestamp (or None) as plain values."""
    return None if found is None else (found.offset, found.timestamp)


class Deadlines:
    """The open campaigns and their deadlines, followed from the event store's log."""

    def __init__(self, app: GroupBuying) -> None:
        self.app = app
        self.position = 0
        self.open: dict[str, datetime] = {}
        self.ids: dict[str, str] = {}  # aggregate id -> campaign slug

    def catch_up(self) -> None:
        while notifications := self.app.recorder.select_notifications(
            self.position, 1000, topics=SCHEDULE_EVENTS, inclusive_of_start=False
        ):
            for notification in notifications:
                self._apply(self.app.mapper.to_domain_event(notification))
            self.position = notifications[-1].id

    def due(self, now: datetime) -> Due:
        return sorted(((c, d) for c, d in self.open.items() if d <= now), key=lambda cd: cd[1])

    def _apply(self, event: object) -> None:
        if isinstance(event, Campaign.Opened):
            self.ids[str(event.originator_id)] = event.campaign_id
            self.open[event.campaign_id] = event.deadline
        elif isinstance(event, Campaign.DeadlineExtended):
            self.open[self.ids[str(event.originator_id)]] = event.deadline
        elif isinstance(event, Campaign.Closed):
            self.open.pop(self.ids[str(event.originator_id)], None)


class BrokerClock:
    """The broker's time, as the append time it gives a record of the clock's own topic.

    Orders are timed by the broker, so a clock whose host runs ahead of it must not close a
    campaign while the broker still appends timely orders. Brokers whose clocks differ can
    still disagree about an order near the deadline when a partition's leader moves.
    """

    def __init__(self, producer: KafkaProducer, topic: str, now: Now) -> None:
        self.producer, self.topic, self.now = producer, topic, now
        self.reading: datetime | None = None
        self.read_at = 0.0  # time.monotonic() when it was read

    def guess(self) -> datetime:
        """The later of the host's time and the last reading plus the time since, unasked."""
        if self.reading is None:
            return self.now()
        return max(self.now(), self.estimate())

    def passed(self, latest: datetime) -> datetime:
        """A reading of the broker's time, read again unless the last one is past `latest`."""
        if self.reading is None or self.reading < latest:
            self._read()
        assert self.reading is not None
        return self.reading

    def estimate(self) -> datetime:
        """The broker's time now: the last reading plus the time since."""
        assert self.reading is not None
        return self.reading + timedelta(seconds=time.monotonic() - self.read_at)

    def _read(self) -> None:
        sent = self.producer.send(self.topic, value=b"", timestamp_ms=PROBE_TIMESTAMP_MS)
        appended = sent.get(timeout=30).timestamp
        if appended == PROBE_TIMESTAMP_MS:
            raise RuntimeError(
                f"Kafka topic {self.topic} keeps the producers' timestamps, so it cannot tell "
                "the clock the broker's time: set its message.timestamp.type to LogAppendTime"
            )
        self.reading = EPOCH + appended * MILLISECOND
        self.read_at = time.monotonic()


class PartitionReader:
    """Reads orders partitions as ingestion does, from its stored position, to see whether a
    record it has not applied remains: one read per partition and stored position."""

    def __init__(self, reader: KafkaConsumer) -> None:
        self.reader = reader
        self.scans: dict[TopicPartition, Scan] = {}
        self.reported: set[tuple[TopicPartition, int, int]] = set()  # deleted ranges logged

    def scan(
        self, behind: dict[TopicPartition, tuple[int | None, int]]
    ) -> dict[TopicPartition, Scan]:
        """For each partition behind, as (stored position, end), what follows the position."""
        previous, self.scans = self.scans, {}
        for tp, (stored, _) in behind.items():
            scan = previous.get(tp)
            if scan is None or scan.stored != stored:  # ingestion moved: read afresh
                scan = Scan(stored, next_offset(stored))
            self.scans[tp] = scan
        unread = [
            tp
            for tp, scan in self.scans.items()
            if scan.first is None and scan.checked_to < behind[tp][1]
        ]
        if unread:
            self._skip_deleted(unread)
            self._read(unread, {tp: behind[tp][1] for tp in unread})
        return dict(self.scans)

    def _skip_deleted(self, partitions: list[TopicPartition]) -> None:
        for tp, beginning in self.reader.beginning_offsets(partitions).items():
            scan = self.scans[tp]
            if beginning > scan.checked_to:
                lost = (tp, scan.checked_to, beginning - 1)
                if lost not in self.reported:
                    self.reported.add(lost)
                    log.warning(
                        "orders partition %s:%d: offsets %d to %d were deleted (retention) "
                        "before ingestion applied them; their orders are lost, and the clock "
                        "no longer waits for them",
                        tp.topic,
                        tp.partition,
                        *lost[1:],
                    )
                scan.checked_to = beginning

    def _read(self, partitions: list[TopicPartition], ends: dict[TopicPartition, int]) -> None:
        self.reader.assign(partitions)
        for tp in partitions:
            self.reader.seek(tp, self.scans[tp].checked_to)
        pending, idle = set(partitions), 0
        give_up = time.monotonic() + READ_BUDGET
        # An open transaction holds a read_committed reader back: stop once nothing moves.
        while pending and idle < IDLE_POLLS and time.monotonic() < give_up:
            polled = self.reader.poll(timeout_ms=100)
            moved = False
            for tp in list(pending):
                scan, records = self.scans[tp], polled.get(tp)
                if records:
                    scan.first = (records[0].offset, records[0].timestamp)
                    pending.discard(tp)
                    moved = True
                    continue
                position = self.reader.position(tp)
                moved |= position > scan.checked_to
                scan.checked_to = max(scan.checked_to, position)
                if scan.checked_to >= ends[tp]:
                    pending.discard(tp)
            idle = 0 if moved else idle + 1


@dataclass(frozen=True)
class Held:
    """Due campaigns that one partition holds back, and why."""

    campaigns: list[str]
    progress: Progress


class HeldLog:
    """Says in the log which partitions hold back which due campaigns, once they have waited
    a while, and again every so often while they still do."""

    def __init__(self) -> None:
        self.since: dict[TopicPartition, float] = {}
        self.warned: dict[TopicPartition, float] = {}

    def note(self, held: dict[TopicPartition, Held], deadlines: dict[str, datetime]) -> None:
        """Log the partitions holding campaigns back (`held`), and set the metric of each
        campaign held (seconds since its deadline in `deadlines`) and the partition."""
        metrics.campaigns_held(
            {
                (campaign_id, tp.topic, tp.partition): max(
                    0.0, (host_now() - deadlines[campaign_id]).total_seconds()
                )
                for tp, why in held.items()
                for campaign_id in why.campaigns
            }
        )
        now = time.monotonic()
        for tp in [tp for tp in self.since if tp not in held]:
            del self.since[tp]
            if self.warned.pop(tp, None) is not None:
                log.info(
                    "orders partition %s:%d no longer holds back any campaign",
                    *tp,
                    extra=where(topic=tp.topic, partition=tp.partition),
                )
        for tp, why in held.items():
            since = self.since.setdefault(tp, now)
            if now - since >= HELD_WARNING_AFTER and (
                now - self.warned.get(tp, -math.inf) >= HELD_WARNING_EVERY
            ):
                self.warned[tp] = now
                log.warning(
                    "%d due campaign(s) (%s) wait on orders partition %s:%d for %.0f s: "
                    "ingestion has applied up to offset %s, and must apply every order "
                    "before offset %d (appended at the deadline, or the end)",
                    len(why.campaigns),
                    ", ".join(why.campaigns[:10]),
                    tp.topic,
                    tp.partition,
                    now - since,
                    why.progress.stored,
                    why.progress.needed,
                    extra=where(topic=tp.topic, partition=tp.partition),
                )


class IngestProgress:
    """Whether ingestion has applied every order appended before a campaign's deadline, in
    the partition that carries the campaign's key in each site's orders topic
    (docs/contract.md)."""

    def __init__(
        self,
        app: GroupBuying,
        offsets: KafkaConsumer,
        orders_topics: Callable[[], list[str]],
        reader: PartitionReader,
    ) -> None:
        """`offsets` asks for offsets as a read_uncommitted consumer: an open transaction's
        records count, since it may still commit orders appended before the deadline.
        `orders_topics` lists every site's orders topic, as Kafka knows them at the time."""
        self.app, self.offsets, self.orders_topics, self.reader = (
            app,
            offsets,
            orders_topics,
            reader,
        )
        self.unknown: dict[str, float] = {}  # topic -> when to ask Kafka about it again
        self.held = HeldLog()

    def ready(self, due: Due) -> list[str]:
        """The due campaigns (deadlines the broker's time passed) whose orders are all in.

        The sites' topics are listed after the broker's time passed the deadlines: a site's
        topic made later can hold no order appended before them.
        """
        topics = self.orders_topics()
        carriers = self._carriers([campaign_id for campaign_id, _ in due], topics)
        if carriers is None:
            return []  # fail closed: no campaign is known to be caught up
        deadlines: dict[TopicPartition, list[datetime]] = defaultdict(list)
        for campaign_id, deadline in due:
            for tp in carriers[campaign_id]:
                deadlines[tp].append(deadline)
        progress = self._progress(deadlines)
        through = {tp: applied_through(p) for tp, p in progress.items()}
        ready = ready_campaigns(due, carriers, through)
        self._note_held(due, carriers, progress, through)
        return ready

    def _carriers(
        self, campaign_ids: list[str], topics: list[str]
    ) -> dict[str, list[TopicPartition]] | None:
        """Each campaign's partition in every orders topic; None if a topic is unknown."""
        counts = {}
        for topic in topics:
            if (count := self._partition_count(topic)) is None:
                return None
            counts[topic] = count
        return {
            campaign_id: [
                TopicPartition(topic, partition_for(campaign_id.encode(), count))
                for topic, count in counts.items()
            ]
            for campaign_id in campaign_ids
        }

    def _partition_count(self, topic: str) -> int | None:
        if time.monotonic() < self.unknown.get(topic, 0.0):
            return None
        # Partitions added to a topic move keys to other partitions: orders of a campaign
        # sent before that are then in one the clock no longer waits on.
        if partitions := self.offsets.partitions_for_topic(topic):
            self.unknown.pop(topic, None)
            return len(partitions)
        self.unknown[topic] = time.monotonic() + UNKNOWN_TOPIC_RETRY
        log.error(
            "Kafka does not know the orders topic %s (is GROUPBUY_TOPIC_PREFIX right, may this "
            "client describe it?): no campaign closes at its deadline until it does",
            topic,
        )
        return None

    def _progress(
        self, deadlines: dict[TopicPartition, list[datetime]]
    ) -> dict[TopicPartition, Progress]:
        partitions = list(deadlines)
        # Step 1. What ingestion stored, in one query.
        stored = self._stored(partitions)
        # Step 2. The ends and the first records at or after each partition's earliest due
        # deadline, a request each, for all partitions at once.
        ends = self.offsets.end_offsets(partitions)
        firsts = self.offsets.offsets_for_times(
            {tp: millis(min(deadlines[tp])) for tp in partitions}
        )
        progress = {
            tp: Progress(stored[tp], ends[tp], offset_and_time(firsts[tp])) for tp in partitions
        }
        # Step 3. Read where that does not tell: past markers, aborted and deleted records.
        behind = {
            tp: (p.stored, p.end)
            for tp, p in progress.items()
            if applied_through(p) < millis(max(deadlines[tp]))
        }
        for tp, scan in self.reader.scan(behind).items():
            progress[tp] = Progress(stored[tp], ends[tp], progress[tp].first_late, scan)
        return progress

    def _stored(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        names = {tp: position_name(tp.topic, tp.partition) for tp in partitions}
        recorder = recorder_of(self.app)
        with (
            recorder.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cursor,
        ):
            stored = recorder.positions.read(cursor, list(names.values()))
        return {tp: stored[name] for tp, name in names.items()}

    def _note_held(
        self,
        due: Due,
        carriers: dict[str, list[TopicPartition]],
        progress: dict[TopicPartition, Progress],
        through: dict[TopicPartition, float],
    ) -> None:
        held: dict[TopicPartition, list[str]] = defaultdict(list)
        for campaign_id, deadline in due:
            for tp in carriers[campaign_id]:
                if millis(deadline) > through[tp]:
                    held[tp].append(campaign_id)
        self.held.note(
            {tp: Held(campaigns, progress[tp]) for tp, campaigns in held.items()}, dict(due)
        )


class Clock:
    """Each tick: the campaigns due by the broker's time whose orders are all in, closed."""

    def __init__(self, app: GroupBuying, broker: BrokerClock, progress: IngestProgress) -> None:
        self.app, self.broker, self.progress = app, broker, progress
        self.deadlines = Deadlines(app)

    def tick(self) -> int:
        """Close what is due and ready; the number closed here."""
        self.deadlines.catch_up()
        # The broker is asked only when a campaign may be due, and only once a tick.
        candidates = self.deadlines.due(self.broker.guess())
        if not candidates:
            return self._none_due()
        broker_now = self.broker.passed(candidates[-1][1])
        due = [(c, d) for c, d in candidates if d <= broker_now]
        if not due:
            return self._none_due()
        closed = sum(self._close(campaign_id) for campaign_id in self.progress.ready(due))
        metrics.CAMPAIGNS_OVERDUE.set(len(due) - closed)
        return closed

    def _none_due(self) -> int:
        """No campaign is overdue, and no partition holds one back: none closed."""
        self.progress.held.note({}, {})
        metrics.CAMPAIGNS_OVERDUE.set(0)
        return 0

    def _close(self, campaign_id: str) -> bool:
        try:
            # Another clock may have closed it first: then this records nothing. The event
            # records when, by the broker's time, this close happened.
            return self.app.close_if_due(campaign_id, self.broker.estimate())
        except CampaignError as error:
            log.warning(
                "cannot close %s: %s", campaign_id, error, extra=where(campaign=campaign_id)
            )
            return False
        finally:
            self.deadlines.open.pop(campaign_id, None)


def run_clock(settings: Settings, stop: threading.Event, now: Now = host_now) -> None:
    """Close campaigns until `stop` is set; `now` is the host's clock."""
    topics = Topics(settings.topic_prefix)
    kafka_clients.ensure_topics(settings, [topics.clock])
    with ExitStack() as cleanup:
        app = open_app(settings)
        cleanup.callback(app.close)
        # An open transaction's records count: it may still commit timely orders.
        offsets = kafka_clients.reader(settings, isolation_level="read_uncommitted")
        cleanup.callback(offsets.close)
        reader = kafka_clients.reader(
            settings,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        cleanup.callback(reader.close)
        producer = kafka_clients.producer(settings, linger_ms=0)
        cleanup.callback(producer.close)

        def orders_topics() -> list[str]:
            return sorted(name for name in offsets.topics() if topics.is_site_orders(name))

        progress = IngestProgress(app, offsets, orders_topics, PartitionReader(reader))
        clock = Clock(app, BrokerClock(producer, topics.clock, now), progress)
        while not stop.is_set():
            clock.tick()
            stop.wait(TICK)
