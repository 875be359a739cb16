"""Settle restarted mid-stream, left a transaction open, fed a forged close, or cut off from
its database: each purchase order and settlement still goes out once, or settle stops."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaProducer
from psycopg.sql import SQL, Identifier

from domain.campaign import Campaign
from domain.outcomes import Order
from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.services.settle import Settled, transactional_id
from infra.settings import Settings
from projections.wire import encode
from tests.support.builders import campaign
from tests.support.kafka_io import buyers_topics, make_site_topics, read_until, site_client
from tests.support.pipeline import ServiceProcess


@pytest.fixture(autouse=True)
def instance(monkeypatch: pytest.MonkeyPatch, unique: str) -> None:
    """This test's settle instance: every settle it starts has the same transactional id."""
    monkeypatch.setenv("GROUPBUY_INSTANCE", f"tests-{unique}")


def closed(
    settings: Settings, supplier: str, ids: list[str], orders: int, close: bool = True
) -> list[dict[str, Any]]:
    """Campaigns with `orders` commitments each, closed in the event store; their events as
    the relay sends them to the campaign-events topic. Their site, site-a, is registered."""
    make_site_topics(settings, ["site-a"])
    app = open_app(settings)
    now = datetime.now(UTC)
    messages: list[dict[str, Any]] = []
    for campaign_id in ids:
        app.open_campaign(campaign(campaign_id, supplier_id=supplier, max_per_buyer=None), now)
        stored = app.get_campaign(campaign_id)
        for n in range(orders):
            stored.place_order(Order(f"site-a:{campaign_id}:{n}", "site-a", f"b-{n}", 1), now)
        if close:
            stored.close_if_due(stored.deadline + timedelta(seconds=1))
        app.save(stored)
        events = app.events.get(Campaign.create_id(campaign_id))
        messages += [json.loads(encode(event, campaign_id)) for event in events]
    app.close()
    return messages


def send(settings: Settings, messages: list[dict[str, Any]]) -> Any:
    """Publish to the campaign-events topic, keyed as the relay keys; where the last went."""
    topic = Topics(settings.topic_prefix).campaign_events
    kafka_clients.ensure_topics(settings, [topic])
    producer = KafkaProducer(**site_client(settings), acks="all")
    futures = [
        producer.send(topic, key=m["campaign_id"].encode(), value=json.dumps(m).encode())
        for m in messages
    ]
    producer.flush()
    producer.close()
    return futures[-1].get(timeout=10)


def ids_in(records: list[Any], field: str) -> Counter[str]:
    return Counter(json.loads(record.value)[field] for record in records)


def test_settle_killed_mid_stream_and_restarted_sends_each_message_once_without_a_stall(
    settings: Settings, unique: str, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    topics = Topics(settings.topic_prefix)
    supplier = f"acme-{unique}"
    campaign_ids = [f"kill{n}-{unique}" for n in range(30)]
    send(settings, closed(settings, supplier, campaign_ids, orders=200))

    processes.append(ServiceProcess("settle", settings, tmp_path / "settle-1.log"))
    read_until(settings, topics.settlements(supplier), lambda rs: len(rs) >= 3, timeout=30)
    processes[-1].kill()  # mid-stream: more campaigns to go, likely one transaction open
    processes.append(ServiceProcess("settle", settings, tmp_path / "settle-2.log"))
    restarted = time.monotonic()
    orders = read_until(
        settings, topics.settlements(supplier), lambda rs: len(rs) >= len(campaign_ids), 60
    )
    buyers = read_until(settings, buyers_topics(settings), lambda rs: len(rs) >= 6000, 30)
    took = time.monotonic() - restarted
    late = read_until(settings, topics.settlements(supplier), lambda rs: False, timeout=2)

    assert ids_in(late, "purchase_order_id") == Counter({f"po-{c}": 1 for c in campaign_ids})
    assert ids_in(buyers, "order_id") == Counter(
        {f"site-a:{c}:{n}": 1 for c in campaign_ids for n in range(200)}
    )
    # The session of the killed member lasts 10 s; a transaction left open would hold
    # read_committed readers for TRANSACTION_TIMEOUT_MS (300 s) unless the restart fenced it.
    assert took < 30, f"settlements took {took:.0f} s after the restart"
    assert len(orders) == len(campaign_ids)


DANGLING = """
import json, sys, time
from kafka import KafkaProducer
options = json.loads(sys.stdin.readline())  # the broker and its credentials, unseen by ps
producer = KafkaProducer(**options, transactional_id=sys.argv[1],
                         transaction_timeout_ms=120_000)
producer.init_transactions()
producer.begin_transaction()
producer.send(sys.argv[2], key=b"site-a", value=b"{}")
producer.flush()
print("open", flush=True)
time.sleep(600)
"""


def test_a_restarted_settle_fences_the_transaction_its_predecessor_left_open(
    settings: Settings, unique: str, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    topics = Topics(settings.topic_prefix)
    buyers_topic = topics.site_buyer_settlements("site-a")  # the site of every order here
    kafka_clients.ensure_topics(settings, [buyers_topic])
    # A settle that died mid-transaction, as the same instance: its transaction stays open.
    predecessor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DANGLING,
            transactional_id(settings),
            buyers_topic,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert predecessor.stdin is not None
        assert predecessor.stdout is not None
        predecessor.stdin.write(json.dumps(site_client(settings)) + "\n")
        predecessor.stdin.flush()
        assert predecessor.stdout.readline() == "open\n"
    finally:
        predecessor.kill()
        predecessor.wait()
    send(settings, closed(settings, f"acme-{unique}", [f"fence-{unique}"], orders=5))

    processes.append(ServiceProcess("settle", settings, tmp_path / "settle.log"))
    buyers = read_until(settings, buyers_topic, lambda rs: len(rs) >= 5, 25)

    assert len(buyers) == 5  # not held back for the 120 s of the open transaction


@pytest.mark.parametrize(
    ("opened", "reason"),
    [
        (False, "the event store has no campaign"),
        (True, "is not closed in the event store"),
        (None, "campaign.closed with a campaign_id or version the read models cannot hold"),
    ],
    ids=["unknown", "open", "nul"],
)
def test_a_forged_close_stops_settle_naming_the_record(
    settings: Settings, unique: str, tmp_path: Path, opened: bool | None, reason: str
) -> None:
    campaign_id = f"forged-{unique}" + ("\x00" if opened is None else "")
    stored = closed(settings, f"acme-{unique}", [campaign_id], 2, close=False) if opened else []
    forged = {
        "type": "campaign.closed",
        "campaign_id": campaign_id,
        "version": 9,
        "occurred_at": "2026-01-01T00:00:00Z",
        "outcome": "succeeded",
        "reason": "deadline",
        "unit_price": "6.00",
        "filled_quantity": 2,
        "lines": [{"site_id": "site-a", "quantity": 2}],
        "closed_at": "2026-01-01T00:00:00Z",
    }
    where = send(settings, [*stored, forged])

    settle = ServiceProcess("settle", settings, tmp_path / "settle.log")
    code = settle.process.wait(timeout=30)

    log = (tmp_path / "settle.log").read_text()
    assert code != 0, log
    assert f"{where.topic}:{where.partition} offset {where.offset}: " in log
    assert reason in log


def terminate(settled: Settled) -> None:
    """Cut settle's database connection, as a database restart does."""
    assert settled.conn is not None
    with psycopg.connect(settled.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (settled.conn.info.backend_pid,))


def test_settled_asks_the_database_and_reconnects_after_it_restarted(settings: Settings) -> None:
    settled, other = Settled(settings), Settled(settings)
    other.add("by-another-instance")

    terminate(settled)
    with pytest.raises(psycopg.OperationalError):
        settled.has("c-1")
    seen_by_another = settled.has("by-another-instance")
    terminate(settled)
    settled.add("c-1")  # the Kafka transaction committed, the database was away
    kept = list(settled.unrecorded)
    settled.record()

    assert seen_by_another
    assert kept == ["c-1"]
    assert settled.unrecorded == []
    with psycopg.connect(settings.database_url) as conn:
        table = Identifier(settings.database_schema, "groupbuying_settled")
        rows = conn.execute(SQL("SELECT campaign_id FROM {} ORDER BY 1").format(table))
        assert rows.fetchall() == [("by-another-instance",), ("c-1",)]
    settled.close()
    other.close()
