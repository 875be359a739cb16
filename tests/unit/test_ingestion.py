"""The ingest handler turns polled records into commands, results and DLQ copies, no broker."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from consumers.batch import Record
from consumers.ingest import IngestBatch, OrderIngestion
from consumers.order_results import event_result
from domain.application import GroupBuying
from infra.adapters.topics import Topics
from tests.unit.builders import DEADLINE, DURING

TOPICS = Topics()
ORDERS, RESULTS, DLQ = (
    TOPICS.site_orders("site-a"),
    TOPICS.site_results("site-a"),
    TOPICS.orders_dlq,
)


@pytest.fixture
def ingestion(app: GroupBuying) -> OrderIngestion:
    return OrderIngestion(app.find_campaign, TOPICS)


def record(
    offset: int, value: bytes | dict[str, Any], at: float | None = None, topic: str = ORDERS
) -> Record:
    payload = value if isinstance(value, bytes) else json.dumps(value).encode()
    millis = int((at or DURING.timestamp()) * 1000)
    return Record(topic, 2, offset, millis, b"small", payload, (("trace", b"t-1"),))


def placed(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "type": "order.placed",
        "order_id": f"site-a:{n}",
        "site_id": "site-a",
        "campaign_id": "small",
        "buyer_id": f"b-{n}",
        "quantity": 2,
        "placed_at": "2026-11-27T10:00:00Z",
    } | changes


def results_of(batch: IngestBatch) -> list[dict[str, Any]]:
    """Every result of the batch: those its events give (as the relay publishes them), then
    those of its outbox."""
    answers = [
        event_result(TOPICS.site_results, campaign.campaign_id, event)
        for campaign in batch.campaigns.values()
        for event in campaign.pending_events
    ]
    messages = [m for m in answers if m is not None] + batch.outbox
    return [json.loads(m.value) for m in messages if m.topic == RESULTS]


def test_each_order_gets_one_result_with_the_live_figures(ingestion: OrderIngestion) -> None:
    batch = ingestion.apply([record(10, placed(1)), record(11, placed(2)), record(12, placed(3))])

    results = results_of(batch)
    assert [r["type"] for r in results] == ["order.accepted"] * 3
    assert [r["committed_quantity"] for r in results] == [2, 4, 6]
    assert [r["unit_price"] for r in results] == ["10.00", "10.00", "8.00"]
    assert batch.outbox == []  # each answer is the event it recorded
    assert batch.last_offsets == {f"{ORDERS}:2": 12}
    assert list(batch.campaigns) == ["small"]


def test_a_redelivered_order_repeats_its_result_and_records_nothing(
    ingestion: OrderIngestion,
) -> None:
    batch = ingestion.apply([record(1, placed(1)), record(2, placed(1))])

    first, again = results_of(batch)
    assert again == first | {"duplicate": True}
    assert len(batch.campaigns["small"].pending_events) == 1


def test_the_broker_append_time_decides_lateness_not_the_site_clock(
    ingestion: OrderIngestion,
) -> None:
    after_deadline = (DEADLINE + timedelta(seconds=1)).timestamp()
    backdated = placed(1, placed_at="2026-11-01T00:00:00Z")

    batch = ingestion.apply([record(1, backdated, at=after_deadline)])

    assert results_of(batch)[0]["reason"] == "campaign_closed"


def test_an_unknown_campaign_is_rejected_without_figures(ingestion: OrderIngestion) -> None:
    batch = ingestion.apply([record(1, placed(1, campaign_id="nope"))])

    (result,) = results_of(batch)
    assert result == {
        "type": "order.rejected",
        "order_id": "site-a:1",
        "site_id": "site-a",
        "campaign_id": "nope",
        "reason": "unknown_campaign",
    }


def test_a_malformed_message_goes_to_the_dlq_as_received_with_its_origin(
    ingestion: OrderIngestion,
) -> None:
    batch = ingestion.apply([record(7, b"{oops"), record(8, placed(2))])

    (dead,) = batch.outbox
    assert (dead.topic, dead.key, dead.value) == (DLQ, b"small", b"{oops")
    headers = dict(dead.headers)
    assert headers["trace"] == b"t-1"
    assert headers["error"].startswith(b"not JSON")
    assert (headers["source.topic"], headers["source.partition"]) == (ORDERS.encode(), b"2")
    assert headers["source.offset"] == b"7"
    assert [r["type"] for r in results_of(batch)] == ["order.accepted"]
    assert batch.last_offsets == {f"{ORDERS}:2": 8}


def test_a_cancellation_is_answered_as_such(ingestion: OrderIngestion) -> None:
    cancel = {
        "type": "order.cancelled",
        "order_id": "site-a:1",
        "site_id": "site-a",
        "campaign_id": "small",
        "cancelled_at": "2026-11-27T11:00:00Z",
    }
    batch = ingestion.apply([record(1, placed(1)), record(2, cancel), record(3, cancel)])

    kinds = [(r["type"], r["committed_quantity"]) for r in results_of(batch)]
    assert kinds == [("order.accepted", 2), ("order.cancelled", 0), ("order.cancelled", 0)]


def test_results_go_to_their_site_keyed_by_campaign_and_only_order_events_give_one(
    app: GroupBuying, ingestion: OrderIngestion
) -> None:
    theirs = placed(2, site_id="site-b", order_id="site-b:2", quantity=20)
    batch = ingestion.apply([record(1, placed(1)), record(2, theirs, topic=ORDERS_B)])
    campaign = batch.campaigns["small"]

    answers = [
        event_result(TOPICS.site_results, "small", event) for event in campaign.pending_events
    ]
    assert [(m.topic, m.key) for m in answers if m] == [(RESULTS, b"small"), (RESULTS_B, b"small")]
    opened = app.repository.event_store.get(campaign.id, lte=1)
    assert [event_result(TOPICS.site_results, "small", event) for event in opened] == [None]


ORDERS_B, RESULTS_B = TOPICS.site_orders("site-b"), TOPICS.site_results("site-b")


def test_a_message_naming_another_site_is_rejected_site_mismatch_and_never_applied(
    ingestion: OrderIngestion,
) -> None:
    forged = placed(1, site_id="site-b", order_id="site-b:1")
    cancel = {"type": "order.cancelled", "order_id": "site-b:9", "site_id": "site-b"}
    cancel |= {"campaign_id": "small", "cancelled_at": "2026-11-27T11:00:00Z"}
    batch = ingestion.apply([record(1, forged), record(2, cancel), record(3, placed(2))])

    answers = [(m.topic, json.loads(m.value)) for m in batch.outbox]
    assert [(topic, a["type"], a.get("reason")) for topic, a in answers] == [
        (RESULTS, "order.rejected", "site_mismatch"),
        (RESULTS, "cancellation.rejected", "site_mismatch"),
    ]
    assert answers[0][1] == {
        "type": "order.rejected",
        "order_id": "site-b:1",
        "site_id": "site-b",
        "campaign_id": "small",
        "reason": "site_mismatch",
    }
    assert [m.key for m in batch.outbox] == [b"small", b"small"]
    # Only site-a's own order reached the campaign.
    (event,) = batch.campaigns["small"].pending_events
    assert (event.site_id, event.order_id) == ("site-a", "site-a:2")


def test_a_message_without_a_site_id_is_its_topics_site(ingestion: OrderIngestion) -> None:
    unnamed = {key: value for key, value in placed(1).items() if key != "site_id"}
    batch = ingestion.apply([record(1, unnamed, topic=ORDERS_B)])

    (result,) = results_of_site_b(batch)
    assert (result["type"], result["site_id"]) == ("order.accepted", "site-b")


def results_of_site_b(batch: IngestBatch) -> list[dict[str, Any]]:
    answers = [
        event_result(TOPICS.site_results, campaign.campaign_id, event)
        for campaign in batch.campaigns.values()
        for event in campaign.pending_events
    ]
    return [json.loads(m.value) for m in answers if m is not None and m.topic == RESULTS_B]


def test_a_record_from_no_sites_topic_is_a_dead_letter(ingestion: OrderIngestion) -> None:
    batch = ingestion.apply([record(1, placed(1), topic="groupbuy.orders.v1")])

    (dead,) = batch.outbox
    assert dead.topic == DLQ
    assert dict(dead.headers)["error"] == b"groupbuy.orders.v1 is no site's orders topic"
    assert batch.campaigns == {}


def test_the_order_that_sells_out_is_answered_with_the_figures_it_brought(
    ingestion: OrderIngestion,
) -> None:
    orders = [record(n, placed(n, quantity=5)) for n in range(1, 6)]  # stock: 20 units

    batch = ingestion.apply(orders)

    results = [(r["type"], r.get("reason"), r["committed_quantity"]) for r in results_of(batch)]
    assert results == [
        ("order.accepted", None, 5),
        ("order.accepted", None, 10),
        ("order.accepted", None, 15),
        ("order.accepted", None, 20),  # and the campaign closed, sold out
        ("order.rejected", "sold_out", 20),
    ]
    assert batch.campaigns["small"].status == "succeeded"


@pytest.mark.parametrize(
    "changes",
    [{"buyer_id": "   "}, {"max_unit_price": "95.0000"}, {"max_unit_price": "1234567890123.00"}],
    ids=["blank buyer", "four decimals written", "thirteen digits"],
)
def test_an_order_past_a_field_limit_the_decoder_names_is_invalid_and_never_stored(
    ingestion: OrderIngestion, changes: dict[str, Any]
) -> None:
    batch = ingestion.apply([record(1, placed(1, **changes)), record(2, placed(2))])

    invalid, accepted = _by_order(results_of(batch))
    assert invalid["type"] == "order.rejected"
    assert invalid["reason"] == "invalid"
    assert accepted["type"] == "order.accepted"
    assert len(batch.campaigns["small"].pending_events) == 1  # the valid order's only


def _by_order(results: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    named = {r["order_id"]: r for r in results}
    return named["site-a:1"], named["site-a:2"]
