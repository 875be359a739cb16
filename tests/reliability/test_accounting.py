"""The accounting's checks themselves: each fails on the fault it is there to catch."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest

from domain.campaign import Campaign
from domain.outcomes import Order
from infra.adapters.topics import Topics
from tests.reliability.accounting import (
    Expected,
    OrderKey,
    StoredCampaign,
    check_buyer_settlements,
    check_orders_topic,
    check_own_topics,
    check_purchase_orders,
    check_results,
    check_store,
    expected_outcomes,
)
from tests.support.builders import campaign

DEADLINE = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
BEFORE, AFTER = DEADLINE - timedelta(seconds=1), DEADLINE
TOPICS = Topics()


class Appended(NamedTuple):
    """The fields of a Kafka record that the accounting reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes


def appended(offset: int, at: datetime, kind: str, order_id: str, site: str = "site-a") -> Appended:
    """A record of `site`'s own orders topic, partition 0."""
    message = {"type": kind, "order_id": order_id, "site_id": site, "campaign_id": "c"}
    value = json.dumps(message).encode()
    return Appended(TOPICS.site_orders(site), 0, offset, int(at.timestamp() * 1000), value)


def result(kind: str, order_id: str, site: str = "site-a") -> dict[str, Any]:
    return {"type": kind, "order_id": order_id, "site_id": site, "campaign_id": "c"}


def outcomes(*records: Appended) -> Expected:
    return expected_outcomes(records, {"c": DEADLINE})


def test_an_order_appended_before_the_deadline_counts_and_one_appended_at_it_does_not() -> None:
    expected = outcomes(
        appended(0, BEFORE, "order.placed", "1"),
        appended(1, AFTER, "order.placed", "2"),
        appended(2, BEFORE, "order.cancelled", "1"),  # offsets, not times, give the order
        appended(3, AFTER, "order.cancelled", "2"),
    )

    assert expected.results == Counter(
        {
            ("site-a", "1", "order.accepted"): 1,
            ("site-a", "2", "order.rejected"): 1,
            ("site-a", "1", "order.cancelled"): 1,
            ("site-a", "2", "cancellation.rejected"): 1,
        }
    )
    assert expected.accepted == {"c": {("site-a", "1")}}
    assert expected.withdrawn == {"c": {("site-a", "1")}}
    assert expected.late == 2


def test_an_order_sent_twice_gets_its_first_answer_twice() -> None:
    expected = outcomes(
        appended(0, BEFORE, "order.placed", "1"),
        appended(1, AFTER, "order.placed", "1"),
    )

    assert expected.results == Counter({("site-a", "1", "order.accepted"): 2})


def test_each_sites_topic_replays_in_its_own_order_and_an_order_id_at_two_sites_is_two() -> None:
    expected = outcomes(
        appended(0, BEFORE, "order.placed", "1", site="site-b"),
        appended(0, AFTER, "order.cancelled", "1"),  # site-a never placed its order 1
        appended(1, BEFORE, "order.cancelled", "1", site="site-b"),
        appended(1, AFTER, "order.placed", "1"),
    )

    assert expected.results == Counter(
        {
            ("site-b", "1", "order.accepted"): 1,
            ("site-b", "1", "order.cancelled"): 1,
            ("site-a", "1", "cancellation.rejected"): 1,
            ("site-a", "1", "order.rejected"): 1,
        }
    )
    assert expected.accepted == {"c": {("site-b", "1")}}
    assert expected.withdrawn == {"c": {("site-b", "1")}}


def test_an_acknowledged_order_missing_from_its_sites_topic_fails_the_accounting() -> None:
    sent = [result("order.placed", "1"), result("order.placed", "2", site="site-b")]
    on_topics = [
        appended(0, BEFORE, "order.placed", "1"),
        appended(0, BEFORE, "order.placed", "2", site="site-b"),
    ]
    check_orders_topic(sent, on_topics, TOPICS.site_orders)

    astray = [
        on_topics[0],
        appended(1, BEFORE, "order.placed", "2", site="site-b")._replace(
            topic=TOPICS.site_orders("site-a")
        ),
    ]
    with pytest.raises(AssertionError, match="lack 1 acknowledged messages"):
        check_orders_topic(sent, astray, TOPICS.site_orders)


def test_a_result_or_settlement_on_another_sites_topic_fails_the_accounting() -> None:
    own = appended(0, BEFORE, "order.accepted", "1", site="site-b")._replace(
        topic=TOPICS.site_results("site-b")
    )
    check_own_topics("results", [own], TOPICS.site_results)

    astray = own._replace(topic=TOPICS.site_results("site-a"))
    with pytest.raises(AssertionError, match="results on another site's topic"):
        check_own_topics("results", [own, astray], TOPICS.site_results)


def test_the_results_pass_when_each_message_has_its_one_result() -> None:
    expected = outcomes(appended(0, BEFORE, "order.placed", "1"))

    check_results(expected, [result("order.accepted", "1")])


def test_a_result_published_twice_fails_the_accounting_as_a_repeated_copy() -> None:
    expected = outcomes(appended(0, BEFORE, "order.placed", "1"))

    with pytest.raises(AssertionError, match=r"1 results too many \(1 of them repeated copies"):
        check_results(expected, [result("order.accepted", "1")] * 2)


def test_a_missing_or_wrong_result_fails_the_accounting() -> None:
    expected = outcomes(appended(0, BEFORE, "order.placed", "1"))

    with pytest.raises(AssertionError, match="1 results missing"):
        check_results(expected, [result("order.rejected", "1")])


def closed_campaign(*orders: Order) -> Campaign:
    definition = campaign("c", max_per_buyer=None, minimum_quantity=1)
    opened = definition.deadline - timedelta(minutes=30)
    held = Campaign.open(definition, opened)
    for order in orders:
        held.place_order(order, opened)
    held.close_if_due(definition.deadline)
    return held


def stored(held: Campaign, placed: Counter[OrderKey] | None = None) -> dict[str, StoredCampaign]:
    """The campaign as the store would hold it: each commitment placed once, unless `placed`
    says otherwise."""
    each_once = Counter({(c.site_id, c.order_id): 1 for c in held.commitments.values()})
    return {"c": StoredCampaign(held, placed or each_once, Counter(), closes=1)}


def test_an_order_stored_twice_fails_the_accounting() -> None:
    held = closed_campaign(Order("1", "site-a", "b1", 2))
    expected = Expected(accepted={"c": {("site-a", "1")}}, withdrawn={"c": set()})
    check_store(expected, stored(held))

    with pytest.raises(AssertionError, match="1 stored twice"):
        check_store(expected, stored(held, placed=Counter({("site-a", "1"): 2})))


def test_a_second_purchase_order_for_a_campaign_fails_the_accounting() -> None:
    held = stored(closed_campaign(Order("1", "site-a", "b1", 2), Order("2", "site-a", "b2", 3)))
    issued = {"type": "purchase_order.issued", "campaign_id": "c", "quantity": 5}
    check_purchase_orders(held, [issued])

    with pytest.raises(AssertionError, match="2 supplier messages"):
        check_purchase_orders(held, [issued, issued])
    with pytest.raises(AssertionError, match=r"supplier got \('purchase_order.issued', 4\)"):
        check_purchase_orders(held, [issued | {"quantity": 4}])


def test_a_buyer_settlement_missing_or_repeated_fails_the_accounting() -> None:
    held = stored(closed_campaign(Order("1", "site-a", "b1", 2), Order("2", "site-a", "b2", 3)))
    settlements = [
        {"type": "commitment.filled", "campaign_id": "c", "site_id": "site-a", "order_id": n}
        | {"quantity": q}
        for n, q in (("1", 2), ("2", 3))
    ]
    check_buyer_settlements(held, settlements)

    with pytest.raises(AssertionError, match=r"1 missing.*1 too many"):
        check_buyer_settlements(held, [settlements[0], settlements[0]])
