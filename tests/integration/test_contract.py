"""What the running services put on the real topics matches docs/schemas/, message by message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.services.clock import run_clock
from infra.services.ingest import run_ingest
from infra.services.relay import run_relay
from infra.services.settle import run_settle
from infra.settings import Settings
from tests.support.builders import campaign, cancelled, order, placed
from tests.support.kafka_io import (
    buyers_topics,
    make_site_topics,
    publish_orders,
    read_json,
    read_until,
    results_topics,
)
from tests.support.pipeline import running
from tests.support.schemas import BUYERS, EVENTS, RESULTS, SCHEMA_FILES, SUPPLIER, problems

NOT_JSON = b'{"type": "order.placed", "order_id": '
# won: opened, 2 placed, 1 rejected, 1 withdrawn, 1 cancellation rejected, closed; lost:
# opened, placed, closed; off: opened, extended, closed.
EVENTS_WRITTEN = 13


def open_three_campaigns(settings: Settings, unique: str, supplier: str) -> list[str]:
    """One that will succeed, one that will fail below its minimum, one called off."""
    won, lost, off = f"won-{unique}", f"lost-{unique}", f"off-{unique}"
    now = datetime.now(UTC)
    soon = (now + timedelta(seconds=6)).isoformat()
    app = open_app(settings)
    try:
        app.open_campaign(
            campaign(won, supplier_id=supplier, deadline=soon, minimum_quantity=1), now
        )
        app.open_campaign(
            campaign(lost, supplier_id=supplier, deadline=soon, minimum_quantity=50), now
        )
        app.open_campaign(campaign(off, supplier_id=supplier), now)
        app.extend_deadline(off, now + timedelta(hours=2), now)
        app.cancel_campaign(off, now)
    finally:
        app.close()
    return [won, lost, off]


def orders_of_every_kind(unique: str, won: str, lost: str) -> list[dict[str, Any]]:
    conditional = order(won, "site-b", "b2", 2, "8.00")
    return [
        order(won, "site-a", "b1", 3, None),
        conditional,
        order(won, "site-c", "b3", 9, None),  # over max_per_buyer: rejected
        placed(f"nowhere-{unique}", 1),  # unknown campaign: rejected, no event
        cancelled(conditional),
        cancelled(placed(won, 99)),  # never placed: the cancellation is rejected
        order(lost, "site-a", "b4", 1, None),  # released when the campaign fails
    ]


def schema_problems(topic: str, messages: list[dict[str, Any]]) -> list[str]:
    return [
        line
        for message in messages
        for line in problems(SCHEMA_FILES[(topic, message["type"])], message)
    ]


def test_every_message_the_services_write_matches_its_schema(
    settings: Settings, unique: str
) -> None:
    topics = Topics(settings.topic_prefix)
    supplier = f"acme-{unique}"
    won, lost, off = open_three_campaigns(settings, unique, supplier)
    orders = orders_of_every_kind(unique, won, lost)
    forged = order(won, "site-b", "b5", 1, None)  # sent by site-c: answered site_mismatch

    make_site_topics(settings)
    with (
        running(run_ingest, settings),
        running(run_relay, settings),
        running(run_clock, settings),
        running(run_settle, settings),
    ):
        publish_orders(settings, orders)
        publish_orders(settings, [forged, NOT_JSON], site="site-c")
        settlements = read_json(settings, topics.settlements(supplier), 3, timeout=90)
        buyers = read_json(settings, buyers_topics(settings), 2, timeout=30)
        results = read_json(settings, results_topics(settings), len(orders) + 1, timeout=30)
        events = read_json(settings, topics.campaign_events, EVENTS_WRITTEN, timeout=30)
        (dead,) = read_until(settings, topics.orders_dlq, lambda rs: bool(rs), timeout=30)

    mine = [e for e in events if e["campaign_id"] in (won, lost, off)]
    assert schema_problems(RESULTS, results) == []
    assert schema_problems(EVENTS, mine) == []
    assert schema_problems(SUPPLIER, settlements) == []
    assert schema_problems(BUYERS, buyers) == []
    seen = {(RESULTS, m["type"]) for m in results} | {(EVENTS, m["type"]) for m in mine}
    seen |= {(SUPPLIER, m["type"]) for m in settlements} | {(BUYERS, m["type"]) for m in buyers}
    assert seen == {key for key in SCHEMA_FILES if key[0] in (RESULTS, EVENTS, SUPPLIER, BUYERS)}
    assert dead.value == NOT_JSON
    headers = dict(dead.headers)
    assert headers["error"].startswith(b"not JSON")
    assert headers["source.topic"] == topics.site_orders("site-c").encode()
    assert {"site_mismatch", "unknown_campaign"} <= {r.get("reason") for r in results}
