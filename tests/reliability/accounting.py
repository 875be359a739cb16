"""The exact accounting after a fault: every order answered once, stored once, settled once."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from domain.campaign import Campaign
from domain.outcomes import CloseOutcome
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.settings import Settings
from tests.support.builders import SITES
from tests.support.faults import OrderStream
from tests.support.kafka_io import Topic, buyers_topics, results_topics, site_client, until
from tests.support.read_models import live_rows, projected_version, rebuilt_rows, stored_version

# Keys of the sites' order-results topics: (site_id, order_id, result type).
ResultKey = tuple[str, str, str]
OrderKey = tuple[str, str]

# --- Reading topics to their end --------------------------------------------------------------


class TopicReader:
    """Every record of a topic (or of each topic of a list, read as one) from its start,
    read with read_committed and kept."""

    def __init__(self, settings: Settings, topic: Topic) -> None:
        self.topics = [topic] if isinstance(topic, str) else list(topic)
        self.records: list[ConsumerRecord] = []
        self.consumer = KafkaConsumer(
            **site_client(settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self.partitions: list[TopicPartition] = []

    def close(self) -> None:
        self.consumer.close()

    def catch_up(self, timeout: float = 30.0) -> bool:
        """Read up to each topic's present end (its last stable offset); False if it took
        longer than `timeout` (an open transaction holds readers back)."""
        deadline = time.monotonic() + timeout
        if not self.partitions:
            found = {topic: self.consumer.partitions_for_topic(topic) for topic in self.topics}
            if not all(found.values()):
                self.consumer.topics()  # ask for metadata; a topic may not exist yet
                return False
            self.partitions = [
                TopicPartition(topic, p) for topic in self.topics for p in sorted(found[topic])
            ]
            self.consumer.assign(self.partitions)
            self.consumer.seek_to_beginning(*self.partitions)
        ends = self.consumer.end_offsets(self.partitions)
        while any(self.consumer.position(p) < ends[p] for p in self.partitions):
            if time.monotonic() > deadline:
                return False
            for batch in self.consumer.poll(timeout_ms=200).values():
                self.records.extend(batch)
        return True

    def wait_for(self, done: Callable[[list[ConsumerRecord]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            caught_up = self.catch_up(max(1.0, deadline - time.monotonic()))
            if caught_up and done(self.records):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(record.value) for record in self.records]


@contextmanager
def readers(settings: Settings, *topics: Topic) -> Iterator[list[TopicReader]]:
    opened = [TopicReader(settings, topic) for topic in topics]
    try:
        yield opened
    finally:
        for reader in opened:
            reader.close()


# --- What the results must be: the sites' orders topics replayed by the contract's rules ----


@dataclass
class Expected:
    """What the orders as appended to Kafka must have produced, by the contract's rules."""

    results: Counter[ResultKey] = field(default_factory=Counter)
    accepted: dict[str, set[OrderKey]] = field(default_factory=dict)  # per campaign
    withdrawn: dict[str, set[OrderKey]] = field(default_factory=dict)
    late: int = 0  # messages appended at or after their campaign's deadline


def expected_outcomes(
    records: Iterable[ConsumerRecord], deadlines: dict[str, datetime]
) -> Expected:
    """Each order message's result, from its append time and what came before it in its
    partition of its site's orders topic: no per-buyer limit and no stock cap, so an order
    appended before its campaign's deadline is accepted, and a cancellation withdraws an
    accepted order."""
    expected = Expected(
        accepted={c: set() for c in deadlines}, withdrawn={c: set() for c in deadlines}
    )
    verdicts: dict[OrderKey, str] = {}
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        message = json.loads(record.value)
        campaign_id = message["campaign_id"]
        key = (message["site_id"], message["order_id"])
        late = record.timestamp >= int(deadlines[campaign_id].timestamp() * 1000)
        expected.late += late
        if message["type"] == "order.placed":
            if key not in verdicts:
                verdicts[key] = "order.rejected" if late else "order.accepted"
                if not late:
                    expected.accepted[campaign_id].add(key)
            result = verdicts[key]
        elif verdicts.get(key) != "order.accepted":
            result = "cancellation.rejected"  # unknown_order
        elif key in expected.withdrawn[campaign_id]:
            result = "order.cancelled"  # a repeat: the first answer again
        elif late:
            result = "cancellation.rejected"  # campaign_closed
        else:
            result = "order.cancelled"
            expected.withdrawn[campaign_id].add(key)
        expected.results[(*key, result)] += 1
    return expected


def examples(counter: Counter[Any], limit: int = 5) -> str:
    shown = [f"{key} x{n}" for key, n in list(counter.items())[:limit]]
    more = f" and {len(counter) - limit} more" if len(counter) > limit else ""
    return ", ".join(shown) + more


# --- The checks: each raises AssertionError saying exactly what is wrong ----------------------


def check_orders_topic(
    acknowledged: list[dict[str, Any]],
    orders: list[ConsumerRecord],
    site_orders: Callable[[str], str],
) -> None:
    """The harness's own footing: each site's orders topic (`site_orders` names it) holds
    every message of that site Kafka acknowledged."""
    sent = Counter(
        (site_orders(m["site_id"]), m["site_id"], m["order_id"], m["type"]) for m in acknowledged
    )
    on_topic = Counter((r.topic, *message_key(json.loads(r.value))) for r in orders)
    lost = sent - on_topic
    assert not lost, f"the orders topics lack {len(lost)} acknowledged messages: {examples(lost)}"


def message_key(message: dict[str, Any]) -> ResultKey:
    return (message["site_id"], message["order_id"], message["type"])


def check_own_topics(
    what: str, records: list[ConsumerRecord], site_topic: Callable[[str], str]
) -> None:
    """(f) Each result or buyer settlement is on the topic of the site it is for
    (`site_topic` names it): no site reads another's."""
    astray = Counter(
        (r.topic, *message_key(m))
        for r, m in ((r, json.loads(r.value)) for r in records)
        if r.topic != site_topic(m["site_id"])
    )
    assert not astray, f"{what} on another site's topic: {examples(astray)}"


def check_results(expected: Expected, results: list[dict[str, Any]]) -> None:
    """(a) One result per order message: counted by (site_id, order_id, type)."""
    got = Counter((r["site_id"], r["order_id"], r["type"]) for r in results)
    missing, extra = expected.results - got, got - expected.results
    problems = []
    if missing:
        problems.append(f"{sum(missing.values())} results missing: {examples(missing)}")
    if extra:
        copies = repeated_copies(results, extra)
        problems.append(
            f"{sum(extra.values())} results too many ({copies} of them repeated copies of "
            f"a result already published): {examples(extra)}"
        )
    assert not problems, "order-results: " + "; ".join(problems)


def repeated_copies(results: list[dict[str, Any]], extra: Counter[ResultKey]) -> int:
    """How many of the surplus results are byte-for-byte repeats of an earlier one."""
    seen: Counter[str] = Counter()
    for result in results:
        if (result["site_id"], result["order_id"], result["type"]) in extra:
            seen[json.dumps(result, sort_keys=True)] += 1
    return sum(n - 1 for n in seen.values())


@dataclass(frozen=True)
class StoredCampaign:
    """What the event store holds of one campaign, as the domain reads it."""

    campaign: Campaign
    placed: Counter[OrderKey]
    withdrawn: Counter[OrderKey]
    closes: int


def stored_campaigns(settings: Settings, campaign_ids: list[str]) -> dict[str, StoredCampaign]:
    app = open_app(settings)
    try:
        stored = {}
        for campaign_id in campaign_ids:
            placed: Counter[OrderKey] = Counter()
            withdrawn: Counter[OrderKey] = Counter()
            closes = 0
            for event in app.events.get(Campaign.create_id(campaign_id)):
                if isinstance(event, Campaign.CommitmentPlaced):
                    placed[(event.site_id, event.order_id)] += 1
                elif isinstance(event, Campaign.CommitmentWithdrawn):
                    withdrawn[(event.site_id, event.order_id)] += 1
                elif isinstance(event, Campaign.Closed):
                    closes += 1
            stored[campaign_id] = StoredCampaign(
                app.get_campaign(campaign_id), placed, withdrawn, closes
            )
        return stored
    finally:
        app.close()


def check_store(expected: Expected, stored: dict[str, StoredCampaign]) -> None:
    """(b) The event store holds each accepted order once, each withdrawal once, one close."""
    problems = []
    for campaign_id, held in stored.items():
        for name, counted, wanted in (
            ("commitments", held.placed, expected.accepted[campaign_id]),
            ("withdrawals", held.withdrawn, expected.withdrawn[campaign_id]),
        ):
            twice = {k: n for k, n in counted.items() if n > 1}
            missing = wanted - set(counted)
            unexpected = set(counted) - wanted
            if twice or missing or unexpected:
                problems.append(
                    f"{campaign_id} {name}: {len(twice)} stored twice {sorted(twice)[:3]}, "
                    f"{len(missing)} missing {sorted(missing)[:3]}, "
                    f"{len(unexpected)} not accepted {sorted(unexpected)[:3]}"
                )
        if held.closes != 1:
            problems.append(f"{campaign_id} closed {held.closes} times")
    assert not problems, "event store: " + "; ".join(problems)


def check_read_models(settings: Settings, campaign_ids: list[str], timeout: float) -> None:
    """(c) The live read models equal a rebuild from zero, once the projector caught up."""
    stored = stored_version(settings, campaign_ids)
    caught_up = until(lambda: projected_version(settings) == stored, timeout)
    assert caught_up, (
        f"read models: the projector applied versions summing to {projected_version(settings)}, "
        f"the store holds {stored} (after {timeout:.0f} s)"
    )
    live, rebuilt = live_rows(settings), rebuilt_rows(settings)
    differing = [
        f"{table} ({len(live[table])} live rows, {len(rebuilt[table])} rebuilt, "
        f"{len(set(map(repr, live[table])) ^ set(map(repr, rebuilt[table])))} differ)"
        for table in live
        if live[table] != rebuilt[table]
    ]
    assert not differing, "read models differ from a rebuild from zero: " + "; ".join(differing)


def filled(held: StoredCampaign) -> list[Any]:
    """The commitments the close filled, as the store has them."""
    closing = held.campaign.closing
    if closing is None or closing.outcome is not CloseOutcome.SUCCEEDED:
        return []
    return [c for c in held.campaign.commitments.values() if c.fills_at(closing.unit_price)]


def check_purchase_orders(
    stored: dict[str, StoredCampaign], supplier: list[dict[str, Any]]
) -> None:
    """(d) One message per campaign on the supplier's topic (read_committed): a purchase order
    for the quantity the store's filled commitments add up to (a failure notice if none)."""
    by_campaign: dict[str, list[dict[str, Any]]] = {c: [] for c in stored}
    for message in supplier:
        by_campaign.setdefault(message["campaign_id"], []).append(message)
    problems = []
    for campaign_id, messages in by_campaign.items():
        held = stored.get(campaign_id)
        if held is None or held.campaign.closing is None:
            problems.append(f"{campaign_id}: not closed in the store, {len(messages)} messages")
            continue
        if len(messages) != 1:
            ids = Counter(m.get("purchase_order_id", m["type"]) for m in messages)
            problems.append(f"{campaign_id}: {len(messages)} supplier messages, not 1 ({ids})")
            continue
        (message,) = messages
        if held.campaign.closing.outcome is CloseOutcome.SUCCEEDED:
            wanted = ("purchase_order.issued", sum(c.quantity for c in filled(held)))
            got = (message["type"], message.get("quantity"))
        else:
            wanted = ("campaign.failed", held.campaign.closing.filled_quantity)
            got = (message["type"], message.get("filled_quantity"))
        if got != wanted:
            problems.append(f"{campaign_id}: supplier got {got}, the store says {wanted}")
    assert not problems, "purchase orders: " + "; ".join(problems)


def check_buyer_settlements(
    stored: dict[str, StoredCampaign], settlements: list[dict[str, Any]]
) -> None:
    """(e) One settlement per commitment standing at close (read_committed), filled exactly
    when the store's close filled it."""
    got = Counter(
        (s["campaign_id"], s["site_id"], s["order_id"], s["type"], s["quantity"])
        for s in settlements
    )
    wanted = standing_settlements(stored)
    missing, extra = wanted - got, got - wanted
    problems = []
    if missing:
        problems.append(f"{sum(missing.values())} missing: {examples(missing)}")
    if extra:
        problems.append(f"{sum(extra.values())} too many: {examples(extra)}")
    assert not problems, "buyer settlements: " + "; ".join(problems)


def standing_settlements(stored: dict[str, StoredCampaign]) -> Counter[tuple[Any, ...]]:
    """The settlement each commitment standing at close must get, by the store."""
    wanted: Counter[tuple[Any, ...]] = Counter()
    for campaign_id, held in stored.items():
        fills = {(c.site_id, c.order_id) for c in filled(held)}
        for c in held.campaign.commitments.values():
            if not c.withdrawn:
                fill = (c.site_id, c.order_id) in fills
                kind = "commitment.filled" if fill else "commitment.released"
                wanted[(campaign_id, c.site_id, c.order_id, kind, c.quantity)] += 1
    return wanted


# --- The whole accounting, once the stream has ended ------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What a run amounted to, for the report."""

    orders: int  # order.placed messages acknowledged
    cancels: int  # order.cancelled messages acknowledged
    on_topic: int  # order messages on the sites' topics (a resend may have written one twice)
    resends: int
    late: int  # appended at or after their campaign's deadline
    accepted: int
    withdrawn: int
    seconds_to_settle: float  # from the stream's end to everything closed and settled

    def __str__(self) -> str:
        return (
            f"{self.orders} orders and {self.cancels} cancellations acknowledged "
            f"({self.on_topic} on the topics, {self.resends} sent again, {self.late} late); "
            f"{self.accepted} accepted, {self.withdrawn} withdrawn; closed and settled "
            f"{self.seconds_to_settle:.0f} s after the stream"
        )


def account(
    settings: Settings, stream: OrderStream, deadlines: dict[str, datetime], timeout: float
) -> Figures:
    """Wait until the stream ended, then until every campaign closed and settled, then run
    every check; one AssertionError names each check that failed."""
    stream.join(timeout)
    ended = time.monotonic()
    topics = Topics(settings.topic_prefix)
    campaign_ids = list(deadlines)
    orders_topics = [topics.site_orders(site) for site in SITES]  # the stream's sites
    names = (orders_topics, results_topics(settings), topics.settlements("acme"))
    with readers(settings, *names, buyers_topics(settings)) as (orders, results, po, buyers):
        assert orders.catch_up(timeout), "could not read the sites' orders topics to their end"
        expected = expected_outcomes(orders.records, deadlines)
        until(lambda: all_closed(settings, campaign_ids), timeout)
        po.wait_for(lambda rs: len(rs) >= len(campaign_ids), timeout)
        stored = stored_campaigns(settings, campaign_ids)
        standing = sum(standing_settlements(stored).values())
        buyers.wait_for(lambda rs: len(rs) >= standing, timeout)
        results.wait_for(lambda rs: len(rs) >= sum(expected.results.values()), timeout)
        settled = time.monotonic() - ended
        failures = failed([lambda: check_read_models(settings, campaign_ids, timeout)])
        for reader in (results, po, buyers):
            reader.catch_up()  # after the read models' wait: a repeat published late shows too
        failures += failed(
            [
                lambda: check_orders_topic(stream.acknowledged, orders.records, topics.site_orders),
                lambda: check_results(expected, results.messages()),
                lambda: check_store(expected, stored),
                lambda: check_purchase_orders(stored, po.messages()),
                lambda: check_buyer_settlements(stored, buyers.messages()),
                lambda: check_own_topics("results", results.records, topics.site_results),
                lambda: check_own_topics(
                    "buyer settlements", buyers.records, topics.site_buyer_settlements
                ),
            ]
        )
        assert not failures, "\n".join(failures)
    return Figures(
        orders=stream.count("order.placed"),
        cancels=stream.count("order.cancelled"),
        on_topic=len(orders.records),
        resends=stream.resends,
        late=expected.late,
        accepted=sum(map(len, expected.accepted.values())),
        withdrawn=sum(map(len, expected.withdrawn.values())),
        seconds_to_settle=settled,
    )


def failed(checks: list[Callable[[], None]]) -> list[str]:
    """Run every check, so that one failure does not hide another; their messages."""
    failures = []
    for check in checks:
        try:
            check()
        except AssertionError as error:
            failures.append(str(error))
    return failures


def all_closed(settings: Settings, campaign_ids: list[str]) -> bool:
    app = open_app(settings)
    try:
        return all(app.get_campaign(c).closing is not None for c in campaign_ids)
    finally:
        app.close()
