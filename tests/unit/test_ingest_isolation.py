"""One bad record never stops ingestion, and a database outage never dead-letters an order."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import psycopg
import pytest
from eventsourcing.persistence import DataError, IntegrityError, OperationalError
from eventsourcing.utils import get_topic
from kafka import TopicPartition

from consumers.batch import OutboxMessage, RawHeaderKey, Record
from consumers.ingest import CampaignLoadError, HalfAppliedError, IngestSink, OrderIngestion
from consumers.loop import MAX_PARKED_IN_A_ROW, RecordStuckError, TrackedLoop
from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.outcomes import Order, Outcome
from infra.adapters.event_store import outbox_headers, stored_headers
from infra.adapters.transcoder import FlatJSONTranscoder
from tests.unit.builders import OPENED_AT, small_definition
from tests.unit.test_ingestion import DLQ, ORDERS, TOPICS, placed, record

# The surrogate arrives as a JSON escape, "\ud800", which json.loads reads as a lone one.
LONE_SURROGATE = "\ud800"


class SavedOutbox:
    """Wraps the in-memory recorder: what each saved transaction held besides its events."""

    def __init__(self, app: GroupBuying) -> None:
        self.messages: list[OutboxMessage] = []
        insert = app.recorder.insert_events

        def insert_events(events: Sequence[Any], **kwargs: Any) -> Any:
            recorded = insert(events, **kwargs)
            self.messages += kwargs.get("outbox", ())
            return recorded

        app.recorder.insert_events = insert_events  # type: ignore[method-assign]

    def dead(self) -> list[OutboxMessage]:
        return [message for message in self.messages if message.topic == DLQ]


@pytest.fixture
def store() -> Iterator[GroupBuying]:
    """The in-memory store, writing events with groupbuy's own transcoder."""
    env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    app = GroupBuying(env=env | {"TRANSCODER_TOPIC": get_topic(FlatJSONTranscoder)})
    app.open_campaign(small_definition(), OPENED_AT)
    yield app
    app.close()


def stored_orders(app: GroupBuying) -> list[str]:
    app.forget("small")
    return sorted(c.order_id for c in app.get_campaign("small").commitments.values())


@pytest.mark.parametrize(
    "poison",
    [
        {"order_id": LONE_SURROGATE},  # lands in the campaign's event
        {"order_id": LONE_SURROGATE, "campaign_id": "nope"},  # in an unknown_campaign result
    ],
    ids=["in-an-event", "in-a-result"],
)
def test_an_id_utf8_cannot_hold_dead_letters_its_order_and_the_others_are_saved(
    store: GroupBuying, poison: dict[str, str]
) -> None:
    saved = SavedOutbox(store)
    sink = IngestSink(store, TOPICS)
    records = [record(1, placed(1)), record(2, placed(2, **poison)), record(3, placed(3))]

    sink.process(records, {})

    assert stored_orders(store) == ["site-a:1", "site-a:3"]
    (dead,) = saved.dead()
    assert dict(dead.headers)["source.offset"] == b"2"
    assert dead.value == records[1].value  # byte for byte


def test_a_database_error_while_loading_fails_the_batch_and_dead_letters_nothing(
    store: GroupBuying,
) -> None:
    saved = SavedOutbox(store)
    sink = IngestSink(store, TOPICS)
    store.forget("small")

    def failing_get(campaign_id: str) -> Campaign:
        raise OperationalError("server closed the connection unexpectedly")

    store.get_campaign = failing_get  # type: ignore[method-assign]

    with pytest.raises(CampaignLoadError, match="server closed the connection"):
        sink.process([record(1, placed(1)), record(2, b"{oops")], {})

    assert saved.messages == []


@pytest.mark.parametrize(
    "failure",
    [psycopg.OperationalError("the database is restarting"), MemoryError(), OSError("EPIPE")],
    ids=lambda failure: type(failure).__name__,
)
def test_a_load_that_fails_for_want_of_a_dependency_is_never_the_orders_fault(
    failure: Exception,
) -> None:
    def load(campaign_id: str) -> Campaign | None:
        raise failure

    ingestion = OrderIngestion(load, TOPICS)

    with pytest.raises((CampaignLoadError, MemoryError)):
        ingestion.apply([record(1, placed(1))])


def test_a_command_that_fails_after_recording_names_its_record(
    app: GroupBuying, monkeypatch: pytest.MonkeyPatch
) -> None:
    place_order = Campaign.place_order

    def records_then_fails(campaign: Campaign, order: Order, now: Any) -> Outcome:
        outcome = place_order(campaign, order, now)
        if order.order_id == "site-a:2":
            raise OverflowError("date value out of range")
        return outcome

    monkeypatch.setattr(Campaign, "place_order", records_then_fails)
    ingestion = OrderIngestion(app.find_campaign, TOPICS)
    records = [record(1, placed(1)), record(2, placed(2)), record(3, placed(3))]

    with pytest.raises(HalfAppliedError) as raised:
        ingestion.apply(records)

    assert raised.value.record == records[1]
    assert "OverflowError" in raised.value.reason


def failing_for(order_id: str, error: Exception) -> Callable[[Campaign, Order, Any], Outcome]:
    """Campaign.place_order, failing with `error` for one order before deciding it."""
    place_order = Campaign.place_order

    def place(campaign: Campaign, order: Order, now: Any) -> Outcome:
        if order.order_id == order_id:
            raise error
        return place_order(campaign, order, now)

    return place


def test_a_command_that_fails_before_recording_is_a_dead_letter_and_the_batch_goes_on(
    app: GroupBuying, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Campaign, "place_order", failing_for("site-a:2", KeyError("tier")))
    ingestion = OrderIngestion(app.find_campaign, TOPICS)

    batch = ingestion.apply([record(1, placed(1)), record(2, placed(2)), record(3, placed(3))])

    (dead,) = batch.outbox
    assert dict(dead.headers)["error"] == b"internal error: KeyError('tier')"
    assert len(batch.campaigns["small"].pending_events) == 2


def test_running_out_of_memory_while_deciding_fails_the_batch_rather_than_the_order(
    app: GroupBuying, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Campaign, "place_order", failing_for("site-a:2", MemoryError()))
    ingestion = OrderIngestion(app.find_campaign, TOPICS)

    with pytest.raises(MemoryError):
        ingestion.apply([record(1, placed(1)), record(2, placed(2))])


# The loop, with a consumer and sinks that stand in for Kafka and PostgreSQL.


class Polled(NamedTuple):
    """The fields of a kafka-python ConsumerRecord that the loop reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


class FakeConsumer:
    """What TrackedLoop asks of a KafkaConsumer: polls that give the records queued."""

    def __init__(self) -> None:
        self.polls: list[list[Record]] = []
        self.seeks: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Polled]]:
        if self.paused:  # as Kafka: nothing of a paused partition (every test uses one)
            return {}
        records = self.polls.pop(0) if self.polls else []
        polled: dict[TopicPartition, list[Polled]] = {}
        for r in records:
            polled.setdefault(TopicPartition(r.topic, r.partition), []).append(
                Polled(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, [])
            )
        return polled

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(ORDERS, 2)}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks[partition] = offset

    def seek_to_beginning(self, partition: TopicPartition) -> None:
        self.seeks[partition] = 0

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    # A partition that still holds every offset the tests use: nothing was lost from it.
    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 10**9)

    def commit_async(self, offsets: dict[TopicPartition, Any]) -> None:
        self.committed |= {partition: meta.offset for partition, meta in offsets.items()}


class RefusingSink:
    """Saves offsets in memory, fenced on positions as PostgreSQL saves them, and fails
    every save that holds one of the `bad` offsets with `failure()`."""

    def __init__(self, bad: set[int], failure: Callable[[], Exception]) -> None:
        self.bad, self.failure = bad, failure
        self.positions: dict[str, int] = {}
        self.saved: list[int] = []
        self.parked: list[tuple[int, str]] = []
        self.saves = 0

    def stored_positions(self, names: Sequence[str]) -> dict[str, int | None]:
        return {name: self.positions.get(name) for name in names}

    def process(self, records: Sequence[Record], expected: dict[str, int | None]) -> None:
        self.saves += 1
        for name in {r.position_name for r in records}:
            self._fence(name, expected)
        if any(r.offset in self.bad for r in records):
            raise self.failure()
        self.saved += [r.offset for r in records]
        self.positions |= {r.position_name: r.offset for r in records}

    def forget(self) -> None:
        pass

    def _fence(self, name: str, expected: dict[str, int | None]) -> None:
        if self.positions.get(name) != expected.get(name):
            raise IntegrityError(f"{name} is no longer at {expected.get(name)}")


class ParkingSink(RefusingSink):
    """A RefusingSink with a dead-letter queue."""

    def park(self, record: Record, reason: str, expected: dict[str, int | None]) -> None:
        self._fence(record.position_name, expected)
        self.parked.append((record.offset, reason))
        self.positions[record.position_name] = record.offset


def loop_over(sink: RefusingSink, offsets: Sequence[int]) -> tuple[TrackedLoop, FakeConsumer]:
    consumer = FakeConsumer()
    consumer.polls.append([record(offset, placed(offset)) for offset in offsets])
    return TrackedLoop(consumer, sink), consumer  # type: ignore[arg-type]


def refused_value() -> Exception:
    return DataError("unsupported Unicode escape sequence: \\u0000 cannot be converted to text")


def test_a_record_the_database_refuses_is_found_by_halves_and_dead_lettered() -> None:
    sink = ParkingSink(bad={13}, failure=refused_value)
    loop, consumer = loop_over(sink, range(10, 30))

    assert loop.poll_once() == 20

    assert sink.saved == [offset for offset in range(10, 30) if offset != 13]
    ((offset, reason),) = sink.parked
    assert offset == 13
    assert reason.startswith("cannot be saved: DataError: unsupported Unicode escape")
    assert sink.saves <= 2 + 2 * 5  # two saves a halving, log2(20) < 5 halvings
    assert consumer.committed == {TopicPartition(ORDERS, 2): 30}


def test_records_the_database_refuses_are_each_dead_lettered() -> None:
    sink = ParkingSink(bad={0, 7, 8, 19}, failure=refused_value)
    loop, _ = loop_over(sink, range(20))

    loop.poll_once()

    assert [offset for offset, _ in sink.parked] == [0, 7, 8, 19]
    assert sorted([*sink.saved, 0, 7, 8, 19]) == list(range(20))


def test_an_integrity_error_of_the_data_is_not_taken_for_a_moved_position() -> None:
    def not_null() -> Exception:
        try:
            raise psycopg.errors.NotNullViolation('null value in column "value"')
        except psycopg.Error as error:
            try:
                raise IntegrityError(str(error)) from error
            except IntegrityError as mapped:  # as eventsourcing maps psycopg's errors
                return mapped

    sink = ParkingSink(bad={4}, failure=not_null)
    loop, _ = loop_over(sink, range(8))

    assert loop.poll_once() == 8

    assert [offset for offset, _ in sink.parked] == [4]


def test_a_moved_position_is_reread_at_once_and_nothing_is_dead_lettered() -> None:
    sink = ParkingSink(bad=set(), failure=refused_value)
    sink.positions[f"{ORDERS}:2"] = 5  # another process got there first
    loop, consumer = loop_over(sink, range(10, 14))

    assert loop.poll_once() == 0
    consumer.polls.append([record(offset, placed(offset)) for offset in range(6, 9)])
    assert loop.poll_once() == 3

    assert sink.parked == []
    assert sink.saved == [6, 7, 8]
    assert consumer.seeks == {TopicPartition(ORDERS, 2): 6}


def test_an_outage_is_retried_after_a_pause_that_doubles_and_nothing_is_dead_lettered() -> None:
    outage = [OperationalError("connection refused")] * 3
    sink = ParkingSink(bad={10}, failure=outage.pop)
    loop, consumer = loop_over(sink, range(10, 12))
    pauses = []

    for _ in range(3):
        assert loop.poll_once(timeout_ms=0) == 0
        pauses.append(round(loop.resume_at - time.monotonic()))
        assert loop.poll_once(timeout_ms=0) == 0  # still pausing: no poll, no save
        loop.resume_at = 0  # the pause is over
        consumer.polls.append([record(10, placed(10)), record(11, placed(11))])

    assert pauses == [1, 2, 4]
    assert sink.parked == []
    sink.bad.clear()
    assert loop.poll_once(timeout_ms=0) == 2
    assert loop.failures == 0


def test_a_sink_without_dead_letters_stops_at_the_record_naming_it() -> None:
    sink = RefusingSink(bad={3}, failure=refused_value)
    loop, _ = loop_over(sink, range(6))

    with pytest.raises(
        RecordStuckError, match=rf"at {ORDERS}:2 offset 3: cannot be saved: DataError"
    ):
        loop.poll_once()

    assert sink.saved == [0, 1, 2]  # those before it are saved; it and the rest wait


def test_a_run_of_records_that_cannot_be_saved_stops_the_loop_rather_than_park_them_all() -> None:
    sink = ParkingSink(bad=set(range(100)), failure=refused_value)
    loop, _ = loop_over(sink, range(100))

    with pytest.raises(RecordStuckError, match="and so did the 8 records before it"):
        loop.poll_once()

    assert len(sink.parked) == MAX_PARKED_IN_A_ROW


def test_a_bug_in_the_sink_stops_the_loop_and_dead_letters_nothing() -> None:
    sink = ParkingSink(bad={1}, failure=lambda: AttributeError("no attribute 'x'"))
    loop, _ = loop_over(sink, range(3))

    with pytest.raises(AttributeError):
        loop.poll_once()

    assert sink.parked == []


# Dead letters keep their headers byte for byte.


def test_headers_are_stored_and_published_byte_for_byte() -> None:
    not_utf8 = RawHeaderKey(b"\xff\xfeh".decode("utf-8", "surrogateescape"))
    headers = (("a\x00b", b"\x00\xff"), (not_utf8, b"v"), ("trace", None), ("", b""))

    stored = json.loads(json.dumps(stored_headers(headers).obj))  # as jsonb holds it
    published = outbox_headers(stored)

    assert [name.encode("utf-8") for name, _ in published] == [
        b"a\x00b",
        b"\xff\xfeh",
        b"trace",
        b"",
    ]
    assert [value for _, value in published] == [b"\x00\xff", b"v", b"", b""]  # None goes empty
    assert stored["hex"][2] == ["7472616365", None]  # the row keeps the null


def test_outbox_rows_written_before_hex_names_still_publish() -> None:
    assert outbox_headers([["trace", "742d31"], ["error", ""]]) == [
        ("trace", b"t-1"),
        ("error", b""),
    ]


class IOThreadConsumer(FakeConsumer):
    """kafka-python's IO thread, where a rebalance after the first runs its listener: any
    call that waits for Kafka fails there."""

    in_listener = False

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.in_listener:
            raise RuntimeError("Cannot block on net.run() from the IO thread itself")
        return super().beginning_offsets(partitions)


def test_a_rebalance_on_the_io_thread_waits_for_no_offsets_and_the_next_poll_seeks() -> None:
    sink = ParkingSink(bad=set(), failure=refused_value)
    sink.positions[f"{ORDERS}:2"] = 11  # applied up to 11 before the rebalance
    consumer = IOThreadConsumer()
    loop = TrackedLoop(consumer, sink)  # type: ignore[arg-type]
    partition = TopicPartition(ORDERS, 2)

    consumer.in_listener = True
    loop.on_partitions_assigned([partition])
    consumer.in_listener = False
    paused = set(consumer.paused)
    consumer.polls.append([record(offset, placed(offset)) for offset in range(12, 15)])

    assert loop.poll_once() == 3

    assert paused == {partition}  # nothing fetched before the seek
    assert consumer.seeks == {partition: 12}
    assert consumer.paused == set()
    assert sink.saved == [12, 13, 14]
