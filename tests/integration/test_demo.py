"""`groupbuy demo` runs to the end, and its purchase order is what the orders it sent add up to."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from decimal import Decimal
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from infra.adapters.topics import Topics
from infra.cli.demo.sites import SITES
from infra.settings import Settings
from tests.support.kafka_io import site_client
from tests.support.pipeline import GROUPBUY, free_port


def everything(settings: Settings, *topics: str) -> list[Any]:
    """Every committed record of `topics` up to their ends as they are now."""
    consumer = KafkaConsumer(
        **site_client(settings), group_id=None, isolation_level="read_committed"
    )
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    ends = consumer.end_offsets(partitions)
    records: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {topics} to their ends"
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def messages(settings: Settings, topics: list[str], campaign_id: str) -> list[dict[str, Any]]:
    return [
        m
        for m in (json.loads(r.value) for r in everything(settings, *topics))
        if m.get("campaign_id") == campaign_id
    ]


def clearing(
    tiers: list[dict[str, Any]], floor: Decimal, commitments: list[tuple[int, Decimal | None]]
) -> tuple[Decimal, int]:
    """The contract's rule, literally: the lowest price whose willing quantity reaches its tier."""

    def willing(price: Decimal) -> int:
        return sum(q for q, limit in commitments if limit is None or limit >= price)

    reachable = [
        max(Decimal(t["unit_price"]), floor)
        for t in tiers
        if willing(max(Decimal(t["unit_price"]), floor)) >= t["min_quantity"]
    ]
    price = min(reachable)
    return price, willing(price)


def test_the_demo_ends_with_a_purchase_order_matching_the_orders_its_sites_sent(
    settings: Settings,
) -> None:
    topics = Topics(settings.topic_prefix)
    port = str(free_port())
    arguments = ["--speed", "10", "--orders", "60", "--seed", "5", "--json", "--port", port]
    demo = subprocess.run(
        [GROUPBUY, "demo", *arguments],
        env=os.environ | settings.as_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    assert f"dashboard: http://127.0.0.1:{port}/" in demo.stderr
    printed = json.loads(demo.stdout.splitlines()[-1])["purchase_order"]
    campaign_id = printed["campaign_id"]

    # What the sites sent, what groupbuy answered, and the campaign as opened: all from Kafka.
    orders = [topics.site_orders(site) for site in SITES]
    sent = [json.loads(r.value) for r in everything(settings, *orders) if _json(r.value)]
    placed = {
        m["order_id"]: m
        for m in sent
        if m["type"] == "order.placed"
        and m["campaign_id"] == campaign_id
        and isinstance(m["quantity"], int)
    }
    results = messages(settings, [topics.site_results(site) for site in SITES], campaign_id)
    accepted = {r["order_id"] for r in results if r["type"] == "order.accepted"}
    withdrawn = {r["order_id"] for r in results if r["type"] == "order.cancelled"}
    opened, *_ = [  # a redelivered copy is the same event
        e
        for e in messages(settings, [topics.campaign_events], campaign_id)
        if e["type"] == "campaign.opened"
    ]
    standing = [placed[order_id] for order_id in sorted(accepted - withdrawn)]
    limits = [Decimal(m["max_unit_price"]) if "max_unit_price" in m else None for m in standing]
    commitments = [(m["quantity"], limit) for m, limit in zip(standing, limits, strict=True)]
    tiers = opened["pricing"]["tiers"]
    price, quantity = clearing(tiers, Decimal(opened["floor_price"]), commitments)
    lines: Counter[str] = Counter()
    for m, limit in zip(standing, limits, strict=True):
        if limit is None or limit >= price:
            lines[m["site_id"]] += m["quantity"]

    assert printed["type"] == "purchase_order.issued"
    assert (printed["quantity"], Decimal(printed["unit_price"])) == (quantity, price)
    assert Decimal(printed["total"]) == price * quantity
    assert printed["lines"] == [{"site_id": s, "quantity": q} for s, q in sorted(lines.items())]
    # The demo shows what it promises: the price fell through the tiers, some orders were
    # conditional, some cancelled, some rejected and some sent to the DLQ.
    assert price <= Decimal(tiers[2]["unit_price"])
    assert any(limit is not None and limit < price for limit in limits)
    assert withdrawn
    assert any(r["type"] == "order.rejected" for r in results)
    assert any(r.key == campaign_id.encode() for r in everything(settings, topics.orders_dlq))
    (supplier_order,) = messages(settings, [topics.settlements("acme")], campaign_id)
    assert supplier_order == printed
    buyers = [topics.site_buyer_settlements(site) for site in SITES]
    settlements = messages(settings, buyers, campaign_id)
    # Each site's settlements reach its own topic only.
    for site in SITES:
        theirs = messages(settings, [topics.site_buyer_settlements(site)], campaign_id)
        assert {s["site_id"] for s in theirs} <= {site}
    assert len(settlements) == len(standing)
    assert sum(Decimal(s["amount"]) for s in settlements) == Decimal(printed["total"])


def _json(value: bytes) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True
