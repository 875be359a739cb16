"""Hostile records among valid orders, through the five services as processes: each gets its
disposition by docs/contract.md, and the accounting stays exact."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.consumer.fetcher import ConsumerRecord
from kafka.partitioner import murmur2
from psycopg.sql import SQL

from consumers.batch import RawHeaderKey, header_name_bytes
from consumers.loop import read_raw_header_keys
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.settings import Settings
from projections.read_models import ReadModelTables
from tests.support.builders import SITES, placed
from tests.support.faults import open_campaigns
from tests.support.kafka_io import make_site_topics, produce_raw, site_client, until
from tests.support.pipeline import ServiceProcess
from tests.support.read_models import live_rows, projected_version, rebuilt_rows, stored_version

pytestmark = pytest.mark.integration

SERVICES = ("ingest", "relay", "project", "clock", "settle")
SUPPLIER = "acme"  # the builders' campaigns' supplier
SMALL_CAMPAIGNS = 3
VALID_PER_CAMPAIGN = 20
HOSTILE = "site-h"  # the site whose orders topic carries the hostile records
# The large campaign's orders: all but one in one fast batch, the last at the end. Each site
# has three topics of its own (docs/contract.md, "Tenants"), so they come from ten sites, not
# from 10,000 (30,000 topics); a campaign.closed of 10,000 lines is test_large_campaign's.
LARGE_ORDERS = 10_000
LARGE_SITES = 10
SMALL_CLOSE = 18.0  # seconds from opening to the deadline of the campaigns the corpus is in
LARGE_CLOSE = 30.0  # later: the last order goes to it once every other record is answered
MiB = 1024 * 1024
# A record batch's header, the record's own fields and its key, below the topic's limit.
BATCH_OVERHEAD = 512
PLACED_AT = "2026-11-27T10:00:00Z"
NUL, SURROGATE = "\\u0000", "\\ud800"  # JSON escapes: the bytes stay ASCII, the text does not
NOT_UTF8 = RawHeaderKey(b"\xffk\xfe".decode("utf-8", "surrogateescape"))

Headers = tuple[tuple[str, bytes | None], ...]
ResultKey = tuple[str, str, str]  # (site_id, order_id, result type)

# What a record must become: a dead letter, or a result of this type with this reason.
DLQ = "dlq"
ANSWERS: dict[str, tuple[str, str | None]] = {
    "accepted": ("order.accepted", None),
    "invalid": ("order.rejected", "invalid"),
    "unknown_campaign": ("order.rejected", "unknown_campaign"),
    "unknown_order": ("cancellation.rejected", "unknown_order"),
    "site_mismatch": ("order.rejected", "site_mismatch"),
    "cancel_site_mismatch": ("cancellation.rejected", "site_mismatch"),
}


# --- The corpus -----------------------------------------------------------------------------


class Row(NamedTuple):
    """One kind of record: its value for a campaign, its headers, what it must become, the
    campaign it goes to (by index; None: spread over the campaigns), and the site whose
    orders topic it is published on."""

    name: str
    expected: str
    value: Callable[[str], bytes | None]
    headers: Headers = ()
    campaign: int | None = None
    site: str = HOSTILE


def order(campaign_id: str, name: str, **changes: Any) -> dict[str, Any]:
    """A valid order.placed of the hostile site, named for its row."""
    return {
        "type": "order.placed",
        "order_id": f"h-{name}",
        "site_id": HOSTILE,
        "campaign_id": campaign_id,
        "buyer_id": f"b-{name}",
        "quantity": 1,
        "placed_at": PLACED_AT,
    } | changes


def cancel(campaign_id: str, name: str, **changes: Any) -> dict[str, Any]:
    return {
        "type": "order.cancelled",
        "order_id": f"h-{name}",
        "site_id": HOSTILE,
        "campaign_id": campaign_id,
        "cancelled_at": PLACED_AT,
    } | changes


def text(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def spliced(body: dict[str, Any], field: str, literal: str) -> bytes:
    """`body` as JSON with `literal` written as is for the value of `field`."""
    mark = "@@SPLICE@@"
    return json.dumps(body | {field: mark}).replace(json.dumps(mark), literal).encode()


def escaped(body: dict[str, Any], field: str, escape: str) -> bytes:
    """`body` with a JSON escape (NUL, a lone surrogate) at the end of `field`'s string."""
    return spliced(body, field, json.dumps(body[field])[:-1] + escape + '"')


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` with an unknown field that makes it `size` bytes."""
    base = len(text(body | {"padding": ""}))
    return text(body | {"padding": "x" * (size - base)})


def placed_with(name: str, **changes: Any) -> Callable[[str], bytes]:
    return lambda campaign_id: text(order(campaign_id, name, **changes))


def bytes_of(value: bytes | None) -> Callable[[str], bytes | None]:
    return lambda _: value


def with_escape(
    make: Callable[..., dict[str, Any]], name: str, field: str, escape: str
) -> Callable[[str], bytes]:
    return lambda campaign_id: escaped(make(campaign_id, name), field, escape)


def id_rows(kind: str, fields: tuple[str, ...]) -> list[Row]:
    """NUL and a lone surrogate in each id of an order.placed or order.cancelled: a dead
    letter, but for buyer_id, which reads and is answered `invalid`."""
    make = order if kind == "order.placed" else cancel
    return [
        Row(
            f"{label} in {kind}'s {field}",
            "invalid" if field == "buyer_id" else DLQ,
            with_escape(make, f"{kind}-{field}-{label}".replace(" ", "-"), field, escape),
        )
        for field in fields
        for label, escape in (("NUL", NUL), ("lone surrogate", SURROGATE))
    ]


def corpus(unknown_campaign: str, size_limit: int) -> list[Row]:
    """The hostile records, with what docs/contract.md says becomes of each."""
    deep = "[" * 5000 + "]" * 5000
    long_integer = "9" * 4301  # one past Python's int() limit
    return [
        Row("5,000-deep array in a field", DLQ, lambda c: spliced(order(c, "deep"), "extra", deep)),
        Row("5,000-deep array as the message", DLQ, bytes_of(deep.encode())),
        Row(
            "4,301-digit quantity",
            DLQ,
            lambda c: spliced(order(c, "long-qty"), "quantity", long_integer),
        ),
        Row(
            "4,301-digit integer in an unknown field",
            DLQ,
            lambda c: spliced(order(c, "long-extra"), "extra", long_integer),
        ),
        *id_rows("order.placed", ("order_id", "site_id", "buyer_id", "campaign_id")),
        *id_rows("order.cancelled", ("order_id", "site_id", "campaign_id")),
        Row(
            "malformed body with a null header value",
            DLQ,
            bytes_of(b'{"type": "order.placed", "quantity": '),
            (("null", None), ("trace", b"n-1")),
        ),
        Row("not JSON, a header name with NUL", DLQ, bytes_of(b"not json"), (("a\x00b", b"\x00"),)),
        Row(
            "unclosed array, a header name not UTF-8", DLQ, bytes_of(b"[1, 2"), ((NOT_UTF8, b"r"),)
        ),
        Row(
            "valid, a header name not UTF-8",
            "accepted",
            placed_with("raw-name"),
            ((NOT_UTF8, b""),),
        ),
        Row("valid, a null header value", "accepted", placed_with("null-value"), (("n", None),)),
        Row("no value", DLQ, bytes_of(None)),
        Row("not UTF-8", DLQ, bytes_of(b'{"type": "order.placed\xff"}')),
        Row("NaN quantity", DLQ, lambda c: spliced(order(c, "nan"), "quantity", "NaN")),
        Row('quantity "2"', DLQ, placed_with("string-qty", quantity="2")),
        Row("duplicate key", DLQ, lambda c: text(order(c, "dup-key"))[:-1] + b', "quantity": 2}'),
        Row(
            "placed_at 0001-01-01T00:00:00+14:00",
            "accepted",
            placed_with("year-1", placed_at="0001-01-01T00:00:00+14:00"),
        ),
        Row(
            "placed_at 9999-12-31T23:59:59-14:00",
            "accepted",
            placed_with("year-9999", placed_at="9999-12-31T23:59:59-14:00"),
        ),
        Row('max_unit_price "1E+2"', DLQ, placed_with("exponent", max_unit_price="1E+2")),
        Row('max_unit_price "٩٥"', DLQ, placed_with("arabic", max_unit_price="٩٥")),
        Row("13-digit money", "invalid", placed_with("13-digits", max_unit_price="1000000000000")),
        Row('max_unit_price "95.0000"', "invalid", placed_with("4-dec", max_unit_price="95.0000")),
        Row('max_unit_price "95.001"', "invalid", placed_with("3-dec", max_unit_price="95.001")),
        Row('max_unit_price "95.000"', "accepted", placed_with("95-000", max_unit_price="95.000")),
        Row('max_unit_price "0.00"', "invalid", placed_with("zero-price", max_unit_price="0.00")),
        Row(
            "a message just under the orders topic's max.message.bytes",
            DLQ,
            lambda c: padded(order(c, "huge"), size_limit - BATCH_OVERHEAD),
        ),
        Row('site_id "[/x]"', DLQ, placed_with("markup", site_id="[/x]")),
        Row("site_id with an ANSI escape", DLQ, placed_with("ansi", site_id="site\x1b[2J")),
        Row("quantity 0", "invalid", placed_with("qty-0", quantity=0)),
        Row("quantity 1,000,001", "invalid", placed_with("qty-big", quantity=1_000_001)),
        # Keyed by the campaign it is interleaved with, like every row: ingestion reads the
        # campaign from the message, never from the key.
        Row(
            "unknown campaign", "unknown_campaign", lambda c: text(order(unknown_campaign, "nope"))
        ),
        # Orders are named by (site_id, order_id): one order id at two sites is two orders,
        # and a third site cannot cancel either. Each is sent on its own site's topic.
        Row(
            "h-shared from site-a",
            "accepted",
            placed_with("shared", site_id="site-a"),
            (),
            0,
            "site-a",
        ),
        Row(
            "h-shared from site-b",
            "accepted",
            placed_with("shared", site_id="site-b"),
            (),
            0,
            "site-b",
        ),
        Row(
            "site-c cancels h-shared",
            "unknown_order",
            lambda c: text(cancel(c, "shared", site_id="site-c")),
            (),
            0,
            "site-c",
        ),
        # A site's topic says whose its messages are: one naming another site is refused
        # before any campaign reads it, answered to the sender; one naming none is the
        # topic's site's.
        Row(
            "site-h orders in site-a's name",
            "site_mismatch",
            placed_with("forged", site_id="site-a"),
        ),
        Row(
            "site-h cancels site-b's h-shared in site-b's name",
            "cancel_site_mismatch",
            lambda c: text(cancel(c, "shared", site_id="site-b")),
            (),
            0,
        ),
        Row(
            "no site_id: site-h's, by its topic",
            "accepted",
            lambda c: text(without(order(c, "unnamed"), "site_id")),
        ),
    ]


def without(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {name: value for name, value in body.items() if name != field}


@dataclass(frozen=True)
class Entry:
    """A record to publish on the orders topic of `site`: keyed by the campaign whose
    partition it is interleaved in."""

    name: str
    key: str
    value: bytes | None
    expected: str
    headers: Headers = ()
    site: str = HOSTILE

    def body(self) -> dict[str, Any]:
        """The message, its site the topic's when it names none."""
        assert self.value is not None
        fields: dict[str, Any] = json.loads(self.value)
        return {"site_id": self.site} | fields

    def result(self) -> ResultKey:
        body = self.body()
        return (body["site_id"], body["order_id"], ANSWERS[self.expected][0])


def hostile_entries(campaign_ids: list[str], unknown: str, size_limit: int) -> list[Entry]:
    entries = []
    for n, row in enumerate(corpus(unknown, size_limit)):
        campaign_id = campaign_ids[n % len(campaign_ids) if row.campaign is None else row.campaign]
        value = row.value(campaign_id)
        entries.append(Entry(row.name, campaign_id, value, row.expected, row.headers, row.site))
    return entries


def valid_entries(campaign_id: str, count: int) -> list[Entry]:
    """Plain valid orders of the hostile site, on its topic among its hostile records, some
    conditional at a limit no final price is above."""
    entries = []
    for n in range(count):
        message = placed(campaign_id, n, quantity=1 + n % 3)
        message |= {"order_id": f"{HOSTILE}:{campaign_id}:{n}", "site_id": HOSTILE}
        if n % 4 == 0:
            message["max_unit_price"] = "10.00"
        entries.append(
            Entry(f"valid {message['order_id']}", campaign_id, text(message), "accepted")
        )
    return entries


def large_site(n: int) -> str:
    """The large campaign's site of order `n`."""
    return f"site-{n % LARGE_SITES:05d}"


# Every site the test sends as: each has its topics made before the services start.
CORPUS_SITES = (HOSTILE, *SITES, *sorted({large_site(n) for n in range(LARGE_SITES)}))


def one_unit(campaign_id: str, n: int) -> Entry:
    """One unit of the large campaign, on its site's topic."""
    message = placed(campaign_id, 0) | {"order_id": f"o-{n}", "site_id": large_site(n)}
    return Entry(f"order {n}", campaign_id, text(message), "accepted", site=large_site(n))


def interleaved(*lists: list[Entry]) -> list[Entry]:
    """The first of each list, then the second of each, and so on."""
    rounds = zip_longest(*lists)
    return [entry for entry in chain.from_iterable(rounds) if entry is not None]


# --- Publishing -----------------------------------------------------------------------------


class Placed(NamedTuple):
    topic: str
    partition: int
    offset: int
    appended_ms: int


class Sender:
    """Publishes each entry to its site's orders topic as the site would (keyed, murmur2),
    and says where each went; a record with a null header value, which kafka-python's send()
    refuses, goes in a produce request of its own (the technique of
    tests/integration/test_ingest_poison.py)."""

    def __init__(self, settings: Settings) -> None:
        self.topics = Topics(settings.topic_prefix)
        self.producer = KafkaProducer(
            **site_client(settings),
            acks="all",
            linger_ms=20,
            max_request_size=4 * MiB,
        )
        self.admin = KafkaAdminClient(**site_client(settings))
        self.sent: list[tuple[Entry, Any]] = []

    def send(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if any(value is None for _, value in entry.headers):
                self.producer.flush()  # keeps the records of a partition in the order given
                self.sent.append((entry, self._produce(entry)))
            else:
                self.sent.append((entry, self._send(entry)))

    def placed(self) -> dict[Entry, Placed]:
        self.producer.flush()
        found = {}
        for entry, sent in self.sent:
            if not isinstance(sent, Placed):
                metadata = sent.get(timeout=30)
                sent = Placed(
                    metadata.topic, metadata.partition, metadata.offset, metadata.timestamp
                )
            found[entry] = sent
        return found

    def close(self) -> None:
        self.producer.close()
        self.admin.close()

    def _send(self, entry: Entry) -> Any:
        topic = self.topics.site_orders(entry.site)
        return self.producer.send(
            topic, key=entry.key.encode(), value=entry.value, headers=list(entry.headers)
        )

    def _produce(self, entry: Entry) -> Placed:
        topic, key = self.topics.site_orders(entry.site), entry.key.encode()
        partitions = sorted(self.producer.partitions_for(topic))
        partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        offset, appended = produce_raw(
            self.admin, topic, partition, key, entry.value, entry.headers
        )
        return Placed(topic, partition, offset, appended)


# --- Reading --------------------------------------------------------------------------------


class TopicTail:
    """Every record of a topic (or of each topic of a list, read as one) from its start,
    read up to its end each time it is asked; header names that are not UTF-8 are read as
    RawHeaderKey."""

    def __init__(self, settings: Settings, topic: str | list[str]) -> None:
        self.topics = [topic] if isinstance(topic, str) else topic
        self.records: list[ConsumerRecord] = []
        self.partitions: list[TopicPartition] = []
        self.consumer = KafkaConsumer(
            **site_client(settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * MiB,
        )
        read_raw_header_keys(self.consumer)

    def read(self) -> list[ConsumerRecord]:
        if not self.partitions:
            found = {topic: self.consumer.partitions_for_topic(topic) for topic in self.topics}
            if not all(found.values()):
                self.consumer.topics()  # asks for metadata: a topic may not exist yet
                return self.records
            self.partitions = [
                TopicPartition(topic, p) for topic in self.topics for p in sorted(found[topic])
            ]
            self.consumer.assign(self.partitions)
            self.consumer.seek_to_beginning(*self.partitions)
        ends = self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + 30
        while any(self.consumer.position(p) < ends[p] for p in self.partitions):
            if time.monotonic() > deadline:
                break
            for batch in self.consumer.poll(timeout_ms=200).values():
                self.records.extend(batch)
        return self.records

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(record.value) for record in self.read()]

    def close(self) -> None:
        self.consumer.close()


# --- The pipeline ---------------------------------------------------------------------------


@dataclass
class Pipeline:
    """The five services, each `groupbuy <service>` as a process of its own, and the topics
    the sites (each site's own, read as one) and a supplier read."""

    settings: Settings
    services: dict[str, ServiceProcess]
    results: TopicTail
    dead_letters: TopicTail
    purchase_orders: TopicTail
    buyer_settlements: TopicTail
    campaign_events: TopicTail

    def dead(self) -> dict[str, str]:
        """The services that exited, with their exit code and last log line."""
        return {
            name: f"exit {service.process.poll()}: {last_line(service.log)}"
            for name, service in self.services.items()
            if service.process.poll() is not None
        }


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(empty log)"


@pytest.fixture
def pipeline(
    settings: Settings, processes: list[ServiceProcess], tmp_path: Path
) -> Iterator[Pipeline]:
    topics = Topics(settings.topic_prefix)
    # Before ingest starts: it would notice a site's orders topic made later only at its
    # next metadata refresh.
    make_site_topics(settings, CORPUS_SITES)
    services = {}
    for name in SERVICES:
        services[name] = ServiceProcess(name, settings, tmp_path / f"{name}.log")
        processes.append(services[name])
    names = (
        [topics.site_results(site) for site in CORPUS_SITES],
        topics.orders_dlq,
        topics.settlements(SUPPLIER),
        [topics.site_buyer_settlements(site) for site in CORPUS_SITES],
        topics.campaign_events,
    )
    tails = [TopicTail(settings, name) for name in names]
    try:
        yield Pipeline(settings, services, *tails)
    finally:
        for tail in tails:
            tail.close()


def orders_topic_limit(kafka_admin: KafkaAdminClient, topic: str) -> int:
    """The orders topic's max.message.bytes, as the broker has it."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=None)
    configs = kafka_admin.describe_configs([resource])["topic"][topic]
    return int(configs["max.message.bytes"]["value"])


def deadlines_in(seconds: dict[str, float]) -> dict[str, datetime]:
    # Whole seconds: the store keeps microseconds, Kafka milliseconds.
    now = datetime.now(UTC).replace(microsecond=0)
    return {c: now + timedelta(seconds=s) for c, s in seconds.items()}


# --- What must have come of it --------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What the entries sent must have produced."""

    entries: list[Entry]

    def answered(self) -> list[Entry]:
        return [e for e in self.entries if e.expected != DLQ]

    def dead(self) -> list[Entry]:
        return [e for e in self.entries if e.expected == DLQ]

    def results(self) -> Counter[ResultKey]:
        return Counter(e.result() for e in self.answered())

    def results_by_topic(self, topics: Topics) -> Counter[tuple[str, str, str, str]]:
        """Each result on the results topic of the site that sent the record, whichever
        site the record named."""
        return Counter((topics.site_results(e.site), *e.result()) for e in self.answered())

    def reasons(self) -> dict[ResultKey, str | None]:
        return {e.result(): ANSWERS[e.expected][1] for e in self.answered()}

    def accepted(self, campaign_id: str) -> list[dict[str, Any]]:
        bodies = (e.body() for e in self.entries if e.expected == "accepted")
        return [b for b in bodies if b["campaign_id"] == campaign_id]

    def units(self, campaign_id: str) -> int:
        return sum(b["quantity"] for b in self.accepted(campaign_id))

    def lines(self, campaign_id: str) -> dict[str, int]:
        lines: Counter[str] = Counter()
        for body in self.accepted(campaign_id):
            lines[body["site_id"]] += body["quantity"]
        return dict(lines)

    def commitments(self, campaign_id: str) -> dict[tuple[str, str], int]:
        return {(b["site_id"], b["order_id"]): b["quantity"] for b in self.accepted(campaign_id)}


def results_of(pipeline: Pipeline) -> Counter[ResultKey]:
    return Counter((m["site_id"], m["order_id"], m["type"]) for m in pipeline.results.messages())


def results_by_topic(pipeline: Pipeline) -> Counter[tuple[str, str, str, str]]:
    return Counter(
        (r.topic, m["site_id"], m["order_id"], m["type"])
        for r, m in ((r, json.loads(r.value)) for r in pipeline.results.read())
    )


def read_model_commitments(settings: Settings, campaign_id: str) -> dict[tuple[str, str], int]:
    tables = ReadModelTables(settings.database_schema)
    query = SQL("SELECT site_id, order_id, quantity FROM {} WHERE campaign_id = %s")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            rows = conn.execute(query.format(tables.commitments), (campaign_id,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {(s, o): q for s, o, q in rows}


def read_model_campaign(settings: Settings, campaign_id: str) -> tuple[Any, ...]:
    tables = ReadModelTables(settings.database_schema)
    query = SQL(
        "SELECT status, committed_quantity, filled_quantity FROM {} WHERE campaign_id = %s"
    ).format(tables.campaigns)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute(query, (campaign_id,)).fetchone()
    assert row is not None, f"{campaign_id} is not in the read model"
    return tuple(row)


def read_model_sites(settings: Settings, campaign_id: str) -> dict[str, int]:
    tables = ReadModelTables(settings.database_schema)
    query = SQL("SELECT site_id, quantity FROM {} WHERE campaign_id = %s").format(tables.sites)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return dict(conn.execute(query, (campaign_id,)).fetchall())


def stored_commitments(settings: Settings, campaign_id: str) -> dict[tuple[str, str], int]:
    app = open_app(settings)
    try:
        commitments = app.get_campaign(campaign_id).commitments
    finally:
        app.close()
    return {key: c.quantity for key, c in commitments.items() if not c.withdrawn}


def settled(pipeline: Pipeline, expected: Expected, campaign_ids: list[str]) -> bool:
    """Whether every campaign has its purchase order and every commitment its settlement,
    and the read model has applied every stored event."""
    orders = {m["campaign_id"] for m in pipeline.purchase_orders.messages()}
    buyers = len(pipeline.buyer_settlements.read())
    wanted = sum(len(expected.accepted(c)) for c in campaign_ids)
    return (
        orders >= set(campaign_ids)
        and buyers >= wanted
        and projected_version(pipeline.settings) == stored_version(pipeline.settings, campaign_ids)
    )


def check_accounting(pipeline: Pipeline, expected: Expected, campaign_ids: list[str]) -> None:
    """Each campaign's store, read model, purchase order and buyer settlements hold exactly
    the accepted orders, once; the read model equals a rebuild from the store."""
    settings = pipeline.settings
    topics = Topics(settings.topic_prefix)
    purchase_orders = pipeline.purchase_orders.messages()
    buyers = Counter((m["campaign_id"], m["type"]) for m in pipeline.buyer_settlements.messages())
    astray = [
        (r.topic, m["site_id"], m["order_id"])
        for r, m in ((r, json.loads(r.value)) for r in pipeline.buyer_settlements.read())
        if r.topic != topics.site_buyer_settlements(m["site_id"])
    ]
    assert astray == [], f"buyer settlements on another site's topic: {astray[:5]}"
    for campaign_id in campaign_ids:
        units = expected.units(campaign_id)
        commitments = expected.commitments(campaign_id)
        assert stored_commitments(settings, campaign_id) == commitments, campaign_id
        assert read_model_commitments(settings, campaign_id) == commitments, campaign_id
        assert read_model_campaign(settings, campaign_id) == ("succeeded", units, units)
        assert read_model_sites(settings, campaign_id) == expected.lines(campaign_id)
        (issued,) = (m for m in purchase_orders if m["campaign_id"] == campaign_id)
        assert issued["type"] == "purchase_order.issued"
        assert issued["quantity"] == units, campaign_id
        assert {line["site_id"]: line["quantity"] for line in issued["lines"]} == expected.lines(
            campaign_id
        )
        assert len(issued["lines"]) == len(expected.lines(campaign_id))
        assert buyers[(campaign_id, "commitment.filled")] == len(commitments), campaign_id
        assert buyers[(campaign_id, "commitment.released")] == 0, campaign_id
    assert len(purchase_orders) == len(campaign_ids)  # one purchase order a campaign
    assert live_rows(settings) == rebuilt_rows(settings)


# --- The tests ------------------------------------------------------------------------------


def test_hostile_records_among_orders_each_get_their_disposition_and_the_accounting_is_exact(
    settings: Settings,
    unique: str,
    pipeline: Pipeline,
    kafka_admin: KafkaAdminClient,
    report: Callable[[str], None],
) -> None:
    started = time.monotonic()
    topics = Topics(settings.topic_prefix)
    small = [f"hostile{n}-{unique}" for n in range(SMALL_CAMPAIGNS)]
    large = f"sites-{unique}"
    deadlines = deadlines_in({c: SMALL_CLOSE for c in small} | {large: LARGE_CLOSE})
    open_campaigns(settings, deadlines, CORPUS_SITES)
    limit = orders_topic_limit(kafka_admin, topics.site_orders(HOSTILE))
    hostile = hostile_entries(small, f"nope-{unique}", limit)
    per_campaign = [
        interleaved(valid_entries(c, VALID_PER_CAMPAIGN), [e for e in hostile if e.key == c])
        for c in small
    ]
    many = [one_unit(large, n) for n in range(LARGE_ORDERS - 1)]

    placed_at = publish_then_one_more(
        pipeline, [*interleaved(*per_campaign), *many], one_unit(large, LARGE_ORDERS - 1), deadlines
    )
    answered = time.monotonic() - started
    expected = Expected(list(placed_at))
    until(lambda: settled(pipeline, expected, [*small, large]), timeout=90)

    dead = pipeline.dead_letters.read()
    results = pipeline.results.messages()
    report(
        f"{len(hostile)} hostile records {dict(Counter(e.expected for e in hostile))}, "
        f"{len(expected.entries) - len(hostile)} valid orders; {len(dead)} dead letters, "
        f"{len(results)} results; the last order answered after {answered:.0f} s, "
        f"all settled after {time.monotonic() - started:.0f} s"
    )
    assert pipeline.dead() == {}
    assert late(placed_at, deadlines) == [], "appended after the deadline: the machine is slow"
    # Every record became what the contract says, once.
    assert results_of(pipeline) == expected.results()
    reasons = {(m["site_id"], m["order_id"], m["type"]): m.get("reason") for m in results}
    assert reasons == expected.reasons()
    # Each answered to the site whose topic carried it, not to the site a forger named.
    assert results_by_topic(pipeline) == expected.results_by_topic(topics)
    # Refused before any campaign read them: no campaign's figures in the answer.
    refused = [m for m in results if m.get("reason") == "site_mismatch"]
    mismatched = [e for e in expected.answered() if ANSWERS[e.expected][1] == "site_mismatch"]
    assert len(refused) == len(mismatched) > 0
    assert all("unit_price" not in m and "committed_quantity" not in m for m in refused)
    check_dead_letters(dead, expected, placed_at)
    check_placed_at_dropped(pipeline, expected)
    check_accounting(pipeline, expected, [*small, large])
    assert len(expected.lines(large)) == LARGE_SITES
    assert pipeline.dead() == {}


def publish_then_one_more(
    pipeline: Pipeline, entries: list[Entry], last: Entry, deadlines: dict[str, datetime]
) -> dict[Entry, Placed]:
    """Publish `entries`; once each is answered or set aside, publish `last`, which must
    then be answered and reach the read model: every service still makes progress."""
    expected = Expected(entries)
    sender = Sender(pipeline.settings)
    try:
        sender.send(entries)
        placed_at = sender.placed()
        answered = until(
            lambda: (
                len(pipeline.dead_letters.read()) >= len(expected.dead())
                and results_of(pipeline) >= expected.results()
            ),
            timeout=60,
        )
        assert answered, unanswered(pipeline, expected)
        sender.send([last])
        placed_at |= sender.placed()
    finally:
        sender.close()
    assert late({last: placed_at[last]}, deadlines) == [], "the machine is too slow for the test"
    body = last.body()
    assert until(lambda: last.result() in results_of(pipeline), timeout=30), (
        f"no result for the order published last; services exited: {pipeline.dead()}"
    )
    assert until(
        lambda: (
            (body["site_id"], body["order_id"])
            in read_model_commitments(pipeline.settings, body["campaign_id"])
        ),
        timeout=30,
    ), f"the order published last is not in the read model; services exited: {pipeline.dead()}"
    return placed_at


def unanswered(pipeline: Pipeline, expected: Expected) -> str:
    """What is missing after the wait for every record's result or dead letter."""
    got = results_of(pipeline)
    missing, unexpected = expected.results() - got, got - expected.results()
    return (
        f"{len(pipeline.dead_letters.read())} dead letters of {len(expected.dead())}; "
        f"results missing: {sorted(missing)[:10]} ({missing.total()}); "
        f"unexpected: {sorted(unexpected)[:10]} ({unexpected.total()}); "
        f"services exited: {pipeline.dead()}"
    )


def late(placed_at: dict[Entry, Placed], deadlines: dict[str, datetime]) -> list[str]:
    """The entries appended at or after the deadline of the campaign they were keyed by."""
    return [
        entry.name
        for entry, where in placed_at.items()
        if where.appended_ms >= int(deadlines[entry.key].timestamp() * 1000)
    ]


def check_dead_letters(
    dead: list[ConsumerRecord], expected: Expected, placed_at: dict[Entry, Placed]
) -> None:
    """The dead letters are the records expected there, each once, byte for byte, with their
    own headers first (a null value as empty) and where they came from: the orders topic,
    partition and offset each was sent to."""
    by_source = {(p.topic, p.partition, p.offset): e for e, p in placed_at.items()}
    letters: dict[Entry, list[ConsumerRecord]] = {}
    for record in dead:
        about = {header_name_bytes(n): v for n, v in record.headers}
        topic = about[b"source.topic"].decode()
        source = (topic, int(about[b"source.partition"]), int(about[b"source.offset"]))
        assert source in by_source, f"a dead letter from {source}, where no record was sent"
        letters.setdefault(by_source[source], []).append(record)
    assert sorted(e.name for e in letters) == sorted(e.name for e in expected.dead())
    for entry, records in letters.items():
        (record,) = records
        assert record.value == (entry.value or b""), entry.name
        assert record.key == entry.key.encode(), entry.name
        own = [(header_name_bytes(n), v) for n, v in record.headers[: len(entry.headers)]]
        assert own == [(header_name_bytes(n), v or b"") for n, v in entry.headers], entry.name
        names = [header_name_bytes(n) for n, _ in record.headers[len(entry.headers) :]]
        assert names == [b"error", b"source.topic", b"source.partition", b"source.offset"]


def check_placed_at_dropped(pipeline: Pipeline, expected: Expected) -> None:
    """Orders placed at instants outside the contract's years are accepted with no
    placed_at; the others keep theirs."""
    events = pipeline.campaign_events.messages()
    placed = {
        (m["site_id"], m["order_id"]): m["placed_at"]
        for m in events
        if m["type"] == "commitment.placed"
    }
    extreme = {"h-year-1", "h-year-9999"}
    for entry in expected.entries:
        if entry.expected != "accepted":
            continue
        body = entry.body()
        want = None if body["order_id"] in extreme else PLACED_AT
        assert placed[(body["site_id"], body["order_id"])] == want, entry.name
