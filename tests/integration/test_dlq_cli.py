"""`groupbuy dlq list` shows dead letters safely; `dlq redrive` sends one back once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from kafka import KafkaProducer

from infra.adapters import kafka_clients
from infra.adapters.topics import Topics
from infra.settings import Settings
from tests.support.builders import campaign, placed
from tests.support.kafka_io import publish_orders, read_until, site_client, wait_for
from tests.support.pipeline import groupbuy, order_pipeline


def letters(settings: Settings, *options: str) -> list[dict[str, object]]:
    done = groupbuy(settings, "dlq", "list", "--json", *options)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_list_shows_each_dead_letter_with_its_error_and_source_escaped(
    settings: Settings, unique: str
) -> None:
    campaign_id = f"dlq-{unique}"
    orders_topic = Topics(settings.topic_prefix).site_orders("site-a")
    with order_pipeline(settings, campaign(campaign_id)):
        assert letters(settings) == []  # no DLQ topic yet, or an empty one
        publish_orders(settings, [b"not json \x1b[31m", b'{"type": "order.placed"}'])
        wait_for(lambda: len(letters(settings)) == 2, what="two dead letters")
    first, second = letters(settings)
    assert first["dlq"] != second["dlq"]
    assert first["source"]["topic"] == orders_topic  # type: ignore[index]
    assert "JSON" in str(first["error"])
    assert first["preview"] == "not json \\x1b[31m"  # the terminal escape shown, not run
    assert "missing field" in str(second["error"])
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    assert letters(settings, "--since", later) == []
    table = groupbuy(settings, "dlq", "list")
    assert table.returncode == 0
    assert "2 dead letters" in table.stdout


def test_redrive_sends_a_fixed_letter_back_once_and_its_order_counts_once(
    settings: Settings, unique: str
) -> None:
    campaign_id = f"redrive-{unique}"
    topics = Topics(settings.topic_prefix)
    orders_topic = topics.site_orders("site-a")
    order = placed(campaign_id, 0, quantity=3)  # order 0 is site-a's
    kafka_clients.ensure_topics(settings, [topics.orders_dlq])
    # A letter an older, stricter version set aside: the order reads well today.
    producer = KafkaProducer(**site_client(settings))
    headers = [
        ("error", b"an old bug"),
        ("source.topic", orders_topic.encode()),
        ("source.partition", b"0"),
        ("source.offset", b"7"),
    ]
    sent = producer.send(
        topics.orders_dlq,
        key=campaign_id.encode(),
        value=json.dumps(order).encode(),
        headers=headers,
    ).get(timeout=30)
    producer.close()
    position = f"{sent.partition}:{sent.offset}"
    with order_pipeline(settings, campaign(campaign_id)):
        first = groupbuy(settings, "dlq", "redrive", "--offsets", position, "--json")
        again = groupbuy(settings, "dlq", "redrive", "--offsets", f"{position},{position}")
        results = read_until(
            settings,
            topics.site_results("site-a"),
            lambda records: any(order["order_id"].encode() in r.value for r in records),
        )
        unknown = groupbuy(settings, "dlq", "redrive", "--offsets", "0:999999")
        malformed = groupbuy(settings, "dlq", "redrive", "--offsets", "zero")
    copies = read_until(settings, orders_topic, lambda records: False, timeout=3)

    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["sent"] is not None
    assert again.returncode == 0
    assert "redriven before; not sent again" in again.stdout
    assert again.stdout.count("\n") == 1  # the position named twice, taken once
    mine = [r for r in copies if order["order_id"].encode() in (r.value or b"")]
    assert len(mine) == 1  # sent back once, whatever was asked
    answers = [json.loads(r.value) for r in results if order["order_id"].encode() in r.value]
    assert [a["type"] for a in answers] == ["order.accepted"]
    assert unknown.returncode == 1
    assert "no dead letter at 0:999999" in unknown.stderr
    assert malformed.returncode == 1
    assert "is not partition:offset" in malformed.stderr
