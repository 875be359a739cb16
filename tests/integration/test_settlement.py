"""At the deadline: one purchase order to the supplier, one settlement per commitment."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain.campaign import Campaign
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.services.clock import run_clock
from infra.services.ingest import run_ingest
from infra.services.relay import run_relay
from infra.services.settle import run_settle
from infra.settings import Settings
from tests.support.builders import campaign, order
from tests.support.kafka_io import (
    buyers_topics,
    make_site_topics,
    publish_orders,
    read_json,
    read_until,
    wait_for,
)
from tests.support.pipeline import ServiceProcess, running


def open_closing_soon(
    settings: Settings, campaign_id: str, seconds: float, **changes: Any
) -> datetime:
    deadline = datetime.now(UTC) + timedelta(seconds=seconds)
    app = open_app(settings)
    fields = {"max_per_buyer": None, "deadline": deadline.isoformat()} | changes
    app.open_campaign(campaign(campaign_id, **fields), datetime.now(UTC))
    app.close()
    return deadline


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[None]:
    make_site_topics(settings)
    with running(run_ingest, settings), running(run_relay, settings), running(run_clock, settings):
        yield


def test_the_supplier_gets_one_purchase_order_and_each_buyer_a_settlement(
    settings: Settings, unique: str, pipeline: None
) -> None:
    topics = Topics(settings.topic_prefix)
    campaign_id = f"po-{unique}"
    open_closing_soon(settings, campaign_id, 4, supplier_id=f"acme-{unique}")
    other_supplier = topics.settlements(f"other-{unique}")
    open_closing_soon(settings, f"other-{unique}", 600, supplier_id=f"other-{unique}")
    orders = [
        order(campaign_id, "site-a", "b1", 30, None),
        order(campaign_id, "site-b", "b2", 25, "8.00"),
        order(campaign_id, "site-b", "b3", 10, "6.00"),
        order(campaign_id, "site-c", "b4", 5, "9.00"),
        order(campaign_id, "site-c", "b5", 4, "7.00"),
        order(campaign_id, "site-c", "b6", 3, "5.00"),  # below the floor: never filled
    ]

    with running(run_settle, settings):
        publish_orders(settings, orders)
        supplier = read_json(settings, topics.settlements(f"acme-{unique}"), 1, timeout=60)
        buyers = read_json(settings, buyers_topics(settings), len(orders), timeout=30)

    (purchase_order,) = supplier
    assert purchase_order == purchase_order | {
        "type": "purchase_order.issued",
        "purchase_order_id": f"po-{campaign_id}",
        "campaign_id": campaign_id,
        "currency": "EUR",
        "quantity": 74,
        "unit_price": "6.00",
        "total": "444.00",
        "reason": "deadline",
        "lines": [
            {"site_id": "site-a", "quantity": 30},
            {"site_id": "site-b", "quantity": 35},
            {"site_id": "site-c", "quantity": 9},
        ],
    }
    filled = [b for b in buyers if b["type"] == "commitment.filled"]
    released = [b for b in buyers if b["type"] == "commitment.released"]
    assert sum(Decimal(b["amount"]) for b in filled) == Decimal(purchase_order["total"])
    assert [b["buyer_id"] for b in released] == ["b6"]
    assert released[0]["amount"] == "0.00"
    assert read_until(settings, other_supplier, lambda rs: bool(rs), timeout=2) == []
    # Each site's settlements on its own topic, keyed by the campaign.
    for site, count in (("site-a", 1), ("site-b", 2), ("site-c", 3)):
        theirs = read_until(settings, topics.site_buyer_settlements(site), lambda rs: False, 1)
        assert [(r.key, json.loads(r.value)["site_id"]) for r in theirs] == [
            (campaign_id.encode(), site)
        ] * count


def test_a_campaign_below_its_minimum_fails_and_releases_everyone(
    settings: Settings, unique: str, pipeline: None
) -> None:
    topics = Topics(settings.topic_prefix)
    campaign_id = f"few-{unique}"
    open_closing_soon(settings, campaign_id, 3, supplier_id=f"acme-{unique}")
    orders = [order(campaign_id, "site-a", f"b{n}", 2, None) for n in range(3)]

    with running(run_settle, settings):
        publish_orders(settings, orders)
        (failed,) = read_json(settings, topics.settlements(f"acme-{unique}"), 1, timeout=60)
        buyers = read_json(settings, buyers_topics(settings), len(orders), timeout=30)

    assert failed == failed | {
        "type": "campaign.failed",
        "campaign_id": campaign_id,
        "filled_quantity": 6,
        "minimum_quantity": 10,
    }
    assert Counter(b["type"] for b in buyers) == {"commitment.released": 3}


def test_settle_killed_at_random_points_still_issues_each_purchase_order_once(
    settings: Settings, unique: str, pipeline: None, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    topics = Topics(settings.topic_prefix)
    supplier = f"acme-{unique}"
    campaign_ids = [f"k{n}-{unique}" for n in range(30)]
    # One deadline for all, after they are opened and their orders sent (over TLS, opening
    # 30 campaigns one connection each takes some seconds).
    deadline = (datetime.now(UTC) + timedelta(seconds=10)).isoformat()
    for campaign_id in campaign_ids:
        open_closing_soon(
            settings, campaign_id, 0, supplier_id=supplier, minimum_quantity=1, deadline=deadline
        )
    publish_orders(
        settings,
        [order(c, "site-a", f"b{n}", 1 + n % 3, None) for c in campaign_ids for n in range(20)],
    )
    rng = random.Random(11)
    for attempt in range(4):
        processes.append(ServiceProcess("settle", settings, tmp_path / f"settle-{attempt}.log"))
        time.sleep(rng.uniform(1.0, 4.0))  # a kill at a random point, not a wait for a state
        processes[-1].kill()
    processes.append(ServiceProcess("settle", settings, tmp_path / "settle-last.log"))

    orders = read_until(
        settings, topics.settlements(supplier), lambda rs: len(rs) >= len(campaign_ids), 90
    )
    late = read_until(settings, topics.settlements(supplier), lambda rs: False, timeout=3)

    ids = Counter(json.loads(r.value)["purchase_order_id"] for r in late)
    assert len(orders) == len(campaign_ids)
    assert ids == Counter({f"po-{c}": 1 for c in campaign_ids})


def test_two_clocks_close_a_campaign_once(settings: Settings, unique: str) -> None:
    campaign_id = f"clocks-{unique}"
    open_closing_soon(settings, campaign_id, 2)
    app = open_app(settings)

    with running(run_ingest, settings), running(run_clock, settings), running(run_clock, settings):
        wait_for(lambda: closed(app, campaign_id), timeout=30, what="the campaign to close")
        time.sleep(1.0)  # give the slower clock its chance to close the campaign again

    events = list(app.events.get(Campaign.create_id(campaign_id)))
    app.close()
    assert sum(isinstance(e, Campaign.Closed) for e in events) == 1


def closed(app: Any, campaign_id: str) -> bool:
    app.forget(campaign_id)
    return app.get_campaign(campaign_id).closing is not None
