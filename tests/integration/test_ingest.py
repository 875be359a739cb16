"""Orders from Kafka reach the event store exactly once, and every order gets one result."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from domain.application import GroupBuying
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.services.ingest import run_ingest
from infra.services.relay import run_relay
from infra.settings import Settings
from tests.support.builders import SITES, campaign, cancelled, placed
from tests.support.kafka_io import (
    make_site_topics,
    publish_orders,
    read_json,
    read_until,
    results_topics,
    wait_for,
)
from tests.support.pipeline import running


@pytest.fixture
def app(settings: Settings) -> Iterator[GroupBuying]:
    application = open_app(settings)
    yield application
    application.close()


def test_orders_over_several_campaigns_are_stored_once_with_one_result_each(
    settings: Settings, app: GroupBuying, unique: str
) -> None:
    campaign_ids = [f"c{n}-{unique}" for n in range(3)]
    for campaign_id in campaign_ids:
        app.open_campaign(campaign(campaign_id), datetime.now(UTC))
    rng = random.Random(7)
    orders = [placed(rng.choice(campaign_ids), n, quantity=rng.randint(1, 4)) for n in range(300)]
    orders += [placed(f"nowhere-{unique}", 1000)]  # unknown campaign
    orders += orders[:25]  # redelivered by a site: the same order_id again

    make_site_topics(settings)
    with running(run_ingest, settings), running(run_relay, settings):
        publish_orders(settings, orders)
        results = read_json(settings, results_topics(settings), len(orders))

    assert len(results) == len(orders)
    assert Counter(r["order_id"] for r in results) == Counter(o["order_id"] for o in orders)
    accepted = {r["order_id"] for r in results if r["type"] == "order.accepted"}
    rejected = {r["order_id"]: r["reason"] for r in results if r["type"] == "order.rejected"}
    assert rejected[placed(f"nowhere-{unique}", 1000)["order_id"]] == "unknown_campaign"
    assert "per_buyer_limit" in rejected.values()
    reader = open_app(settings)  # a fresh application: nothing cached from before ingestion
    stored = {
        commitment.order_id: commitment.quantity
        for campaign_id in campaign_ids
        for commitment in reader.get_campaign(campaign_id).commitments.values()
    }
    reader.close()
    assert set(stored) == accepted
    by_id = {o["order_id"]: o["quantity"] for o in orders}
    assert stored == {order_id: by_id[order_id] for order_id in accepted}


def test_malformed_messages_go_to_the_dlq_byte_for_byte_and_ingestion_carries_on(
    settings: Settings, app: GroupBuying, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    campaign_id = f"dlq-{unique}"
    app.open_campaign(campaign(campaign_id), datetime.now(UTC))
    malformed: list[dict[str, Any] | bytes] = [
        b"not json at all",
        b"\xff\xfe\x00",
        b'["a", "list"]',
        json.dumps({"type": "order.shipped", "campaign_id": campaign_id}).encode(),
        json.dumps({k: v for k, v in placed(campaign_id, 1).items() if k != "buyer_id"}).encode(),
        json.dumps(placed(campaign_id, 2) | {"quantity": "three"}).encode(),
        json.dumps(placed(campaign_id, 3) | {"padding": "x" * 70_000}).encode(),
    ]
    well_formed = [
        placed(campaign_id, 4, quantity=-5),  # negative: rejected as invalid
        placed(campaign_id, 5, quantity=10**12),  # huge: rejected as invalid
        placed(campaign_id, 6, quantity=2),  # and the consumer still accepts good orders
    ]

    make_site_topics(settings)
    with running(run_ingest, settings), running(run_relay, settings):
        publish_orders(settings, malformed, site=SITES[0])
        publish_orders(settings, well_formed)
        dead = read_until(settings, topics.orders_dlq, lambda rs: len(rs) >= len(malformed))
        results = read_json(settings, results_topics(settings), len(well_formed))

    assert [r.value for r in dead] == malformed
    errors = [dict(r.headers)["error"].decode() for r in dead]
    for error, expected in zip(
        errors,
        [
            "not JSON",
            "not UTF-8",
            "not a JSON object",
            "unknown type 'order.shipped'",
            "missing field 'buyer_id'",
            "field 'quantity' must be an integer",
            "oversized message",
        ],
        strict=True,
    ):
        assert expected in error
    for record in dead:
        headers = dict(record.headers)
        assert headers["source.topic"] == topics.site_orders(SITES[0]).encode()
        assert int(headers["source.offset"]) >= 0
    verdicts = {r["order_id"]: (r["type"], r.get("reason")) for r in results}
    assert verdicts == {
        well_formed[0]["order_id"]: ("order.rejected", "invalid"),
        well_formed[1]["order_id"]: ("order.rejected", "invalid"),
        well_formed[2]["order_id"]: ("order.accepted", None),
    }


def test_every_rejection_reason_reaches_the_site_as_a_result(
    settings: Settings, app: GroupBuying, unique: str
) -> None:
    now = datetime.now(UTC)
    ids = {name: f"{name}-{unique}" for name in ("main", "future", "stock", "closing", "cutoff")}
    app.open_campaign(campaign(ids["main"], max_per_buyer=2), now)
    app.open_campaign(campaign(ids["future"], opens_at=(now + timedelta(hours=1)).isoformat()), now)
    app.open_campaign(campaign(ids["stock"], minimum_quantity=1, maximum_quantity=5), now)
    deadline = now + timedelta(seconds=3)
    app.open_campaign(campaign(ids["closing"], deadline=deadline.isoformat()), now)
    # The cutoff must be shorter than the time to the deadline: it passes a second from now.
    cutoff_deadline = (now + timedelta(hours=2)).isoformat()
    app.open_campaign(
        campaign(ids["cutoff"], deadline=cutoff_deadline, cancellation_cutoff="PT1H59M59S"), now
    )
    cutoff_order = placed(ids["cutoff"], 1)
    # Orders of one campaign share a partition, so they are applied in this order.
    expected: list[tuple[dict[str, Any], str, str | None]] = [
        (placed(ids["main"], 2, quantity=3), "order.rejected", "per_buyer_limit"),
        (placed(ids["main"], 3, quantity=0), "order.rejected", "invalid"),
        (placed(ids["main"], 4, max_unit_price="9.999"), "order.rejected", "invalid"),
        (cancelled(placed(ids["main"], 5)), "cancellation.rejected", "unknown_order"),
        (placed(f"none-{unique}", 6), "order.rejected", "unknown_campaign"),
        (placed(ids["future"], 7), "order.rejected", "not_open"),
        # One site's, so that they share its topic's partition too.
        (placed(ids["stock"], 8, quantity=3, site_id="site-a"), "order.accepted", None),
        (placed(ids["stock"], 9, quantity=3, site_id="site-a"), "order.rejected", "exceeds_stock"),
        (placed(ids["stock"], 10, quantity=2, site_id="site-a"), "order.accepted", None),
        (placed(ids["stock"], 11, site_id="site-a"), "order.rejected", "sold_out"),
        (cutoff_order, "order.accepted", None),
        (cancelled(cutoff_order), "cancellation.rejected", "cutoff_passed"),
    ]
    late = placed(ids["closing"], 12)

    wait_for(lambda: datetime.now(UTC) > now + timedelta(seconds=1), what="the cutoff")
    make_site_topics(settings)
    with running(run_ingest, settings), running(run_relay, settings):
        publish_orders(settings, [message for message, _, _ in expected])
        results = read_json(settings, results_topics(settings), len(expected))
        wait_for(lambda: datetime.now(UTC) > deadline, what="the deadline")
        publish_orders(settings, [late])
        results = read_json(settings, results_topics(settings), len(expected) + 1)

    verdicts = [(r["order_id"], r["type"], r.get("reason")) for r in results]
    for message, kind, reason in expected:
        assert (message["order_id"], kind, reason) in verdicts
    assert (late["order_id"], "order.rejected", "campaign_closed") in verdicts


def test_each_site_writes_in_its_own_name_only_and_a_new_site_is_followed_at_once(
    settings: Settings, app: GroupBuying, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    campaign_id = f"tenants-{unique}"
    app.open_campaign(campaign(campaign_id), datetime.now(UTC))
    forged = placed(campaign_id, 1, site_id="site-b", order_id="site-b:forged")
    unnamed = {k: v for k, v in placed(campaign_id, 2).items() if k != "site_id"}
    newcomer = f"new-{unique}"

    make_site_topics(settings)
    with running(run_ingest, settings), running(run_relay, settings):
        # Both on site-a's topic: one names site-b, the other names no site.
        publish_orders(settings, [forged, unnamed], site="site-a")
        answers = read_json(settings, topics.site_results("site-a"), 2)
        # A site registered while ingestion runs: its topics made now, no restart.
        make_site_topics(settings, [newcomer])
        publish_orders(settings, [placed(campaign_id, 3, site_id=newcomer)], site=newcomer)
        (theirs,) = read_json(settings, topics.site_results(newcomer), 1, timeout=60)

    by_order = {answer["order_id"]: answer for answer in answers}
    assert by_order["site-b:forged"] == {
        "type": "order.rejected",
        "order_id": "site-b:forged",
        "site_id": "site-b",
        "campaign_id": campaign_id,
        "reason": "site_mismatch",
    }
    assert by_order[unnamed["order_id"]]["type"] == "order.accepted"
    assert by_order[unnamed["order_id"]]["site_id"] == "site-a"
    assert (theirs["type"], theirs["site_id"]) == ("order.accepted", newcomer)
    assert read_json(settings, topics.site_results("site-b"), 1, timeout=2) == []
    stored = open_app(settings)
    try:
        commitments = stored.get_campaign(campaign_id).commitments.values()
        assert sorted((c.site_id, c.order_id) for c in commitments) == sorted(
            [("site-a", unnamed["order_id"]), (newcomer, placed(campaign_id, 3)["order_id"])]
        )
    finally:
        stored.close()


def test_two_installations_sharing_a_cluster_and_prefix_each_ingest_every_order(
    settings: Settings, unique: str
) -> None:
    # A second installation: the same brokers and topics, its own schema (dropped with the
    # test's own, which it is named after).
    other = replace(settings, database_schema=f"{settings.database_schema}_other")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{other.database_schema}"')
    campaign_id = f"twice-{unique}"
    for installation in (settings, other):
        app = open_app(installation)
        app.open_campaign(campaign(campaign_id, max_per_buyer=None), datetime.now(UTC))
        app.close()
    orders = [placed(campaign_id, n) for n in range(60)]

    make_site_topics(settings)
    with running(run_ingest, settings), running(run_ingest, other):
        publish_orders(settings, orders)
        wait_for(
            lambda: all(committed(i, campaign_id) == len(orders) for i in (settings, other)),
            timeout=60,
            what="every order in both event stores",
        )

    assert committed(settings, campaign_id) == committed(other, campaign_id) == len(orders)


def committed(settings: Settings, campaign_id: str) -> int:
    app = open_app(settings)
    try:
        return app.get_campaign(campaign_id).committed_quantity
    finally:
        app.close()
