"""`groupbuy serve` over real HTTP: the live read models, as a storefront and its CDN read them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from infra.adapters.app import open_app
from infra.services.project import run_project
from infra.services.relay import run_relay
from infra.settings import Settings
from projections.read_models import ReadModelTables
from tests.support.builders import campaign, order
from tests.support.kafka_io import publish_orders, wait_for
from tests.support.pipeline import order_pipeline, running
from tests.support.read_models import projected_version

INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z")
MONEY = re.compile(r"\d+\.\d{2}")


def test_a_campaign_is_read_live_with_money_as_strings_and_cacheable(
    settings: Settings, api: httpx.Client, unique: str
) -> None:
    campaign_id = f"web-{unique}"
    assert api.get("/readyz").status_code == 503  # no read models before the projector
    with order_pipeline(settings, campaign(campaign_id, max_per_buyer=None)):
        publish_orders(settings, [order(campaign_id, "site-a", "b1", 12, None)])
        wait_for(lambda: projected_version(settings) == 2, what="the order projected")
        first = api.get(f"/v1/campaigns/{campaign_id}")
        again = api.get(
            f"/v1/campaigns/{campaign_id}", headers={"If-None-Match": first.headers["ETag"]}
        )
        publish_orders(settings, [order(campaign_id, "site-b", "b2", 9, "9.00")])
        wait_for(lambda: projected_version(settings) == 3, what="the next order projected")

        def read_again() -> httpx.Response:
            path = f"/v1/campaigns/{campaign_id}"
            return api.get(path, headers={"If-None-Match": first.headers["ETag"]})

        # The server hears of the commit a moment after it (a notification), then reads.
        wait_for(lambda: read_again().status_code == 200, timeout=5, what="the new figures")
        moved = read_again()
        demand = api.get(f"/v1/campaigns/{campaign_id}/demand")

    assert api.get("/readyz").json() == {"status": "ready"}
    assert first.status_code == 200
    body = first.json()
    assert (body["campaign_id"], body["status"], body["committed_quantity"]) == (
        campaign_id,
        "open",
        12,
    )
    assert MONEY.fullmatch(body["unit_price"])
    assert MONEY.fullmatch(body["floor_price"])
    assert INSTANT.fullmatch(body["deadline"])
    assert INSTANT.fullmatch(body["updated_at"])
    assert body["sites"] == [{"site_id": "site-a", "quantity": 12}]
    assert first.headers["Cache-Control"].startswith("public, max-age=")
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["ETag"] == first.headers["ETag"]
    assert moved.status_code == 200
    assert (moved.json()["committed_quantity"], moved.json()["unit_price"]) == (21, "8.00")
    assert moved.headers["ETag"] != first.headers["ETag"]
    history = api.get(f"/v1/campaigns/{campaign_id}/prices").json()
    # A row each time the price moved: at the opening, and at 21 units (8.00 from 20).
    assert [(p["unit_price"], p["committed_quantity"]) for p in history["prices"]] == [
        ("10.00", 0),
        ("8.00", 21),
    ]
    assert all(INSTANT.fullmatch(p["at"]) for p in history["prices"])
    # 12 units at any price, 9 up to 9.00: all 21 would pay 8.00, the price of 21 units.
    assert demand.json() == {
        "campaign_id": campaign_id,
        "currency": "EUR",
        "units_at_any_price": 12,
        "total_units": 21,
        "clearing_price": "8.00",
        "filled_quantity": 21,
        "points": [{"max_unit_price": "9.00", "units": 9, "willing": 21, "schedule_price": "8.00"}],
    }
    assert demand.headers["ETag"]


def test_campaigns_are_listed_and_filtered_and_bad_requests_name_what_is_wrong(
    settings: Settings, api: httpx.Client, unique: str
) -> None:
    campaign_id = f"listed-{unique}"
    app = open_app(settings)
    app.open_campaign(campaign(campaign_id), datetime.now(UTC))
    app.close()
    with running(run_relay, settings), running(run_project, settings):
        wait_for(lambda: projected_version(settings) == 1, what="the opening projected")

        listed = api.get("/v1/campaigns").json()["campaigns"]
        open_ones = api.get("/v1/campaigns", params={"status": "open"}).json()["campaigns"]
        failed = api.get("/v1/campaigns", params={"status": "failed"}).json()["campaigns"]
        bad = api.get("/v1/campaigns", params={"status": "sold"})
        unknown = api.get(f"/v1/campaigns/none-{unique}")
        unknown_prices = api.get(f"/v1/campaigns/none-{unique}/prices")
        unknown_demand = api.get(f"/v1/campaigns/none-{unique}/demand")

    assert [c["campaign_id"] for c in listed] == [campaign_id]
    assert [c["campaign_id"] for c in open_ones] == [campaign_id]
    assert failed == []
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "status"]
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"detail": f"no campaign 'none-{unique}'"},
    )
    assert unknown_prices.status_code == 404
    assert unknown_demand.status_code == 404


def test_the_openapi_document_names_every_path(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()

    assert set(document["paths"]) == {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/campaigns",
        "/v1/campaigns/{campaign_id}",
        "/v1/campaigns/{campaign_id}/prices",
        "/v1/campaigns/{campaign_id}/demand",
        "/v1/campaigns/{campaign_id}/live",
        "/v1/live",
        "/v1/sites/{site_id}/orders",
        "/v1/sites/{site_id}/cancellations",
        "/v1/sites/{site_id}/orders/{order_id}",
        "/v1/campaigns/{campaign_id}/extend",
        "/v1/campaigns/{campaign_id}/cancel",
        "/v1/sites",
    }


def test_a_live_stream_pushes_each_committed_change_and_resumes_after_its_last_event(
    settings: Settings, api: httpx.Client, unique: str
) -> None:
    campaign_id = f"live-{unique}"
    path = f"/v1/campaigns/{campaign_id}/live"
    with order_pipeline(settings, campaign(campaign_id, max_per_buyer=None)):
        wait_for(lambda: projected_version(settings) == 1, what="the opening projected")
        with api.stream("GET", path) as stream:
            events = sse_events(stream)
            opening = next(events)
            streaming = live_streams(api)
            publish_orders(settings, [order(campaign_id, "site-a", "b1", 12, None)])
            pushed = next(events)
        # Reconnecting after the last event seen: nothing again until the next change.
        with api.stream("GET", path, headers={"Last-Event-ID": pushed["id"]}) as stream:
            events = sse_events(stream)
            publish_orders(settings, [order(campaign_id, "site-b", "b2", 9, None)])
            resumed = next(events)
        with api.stream("GET", path, headers={"Last-Event-ID": opening["id"]}) as stream:
            behind = next(sse_events(stream))
        unknown = api.get(f"/v1/campaigns/none-{unique}/live")

    assert stream.headers["content-type"].startswith("text/event-stream")
    assert (opening["event"], opening["id"]) == ("campaign", "1")
    assert (opening["data"]["committed_quantity"], opening["data"]["unit_price"]) == (0, "10.00")
    assert (pushed["id"], pushed["data"]["committed_quantity"]) == ("2", 12)
    assert pushed["data"]["units_to_next_price"] == 8  # 8.00 from 20 units
    assert (resumed["id"], resumed["data"]["committed_quantity"]) == ("3", 21)
    assert (resumed["data"]["unit_price"], resumed["data"]["buyers"]) == ("8.00", 2)
    assert (behind["id"], behind["data"]["committed_quantity"]) == ("3", 21)
    assert unknown.status_code == 404
    assert streaming >= 1  # this test's stream, counted in the server's /metrics


def live_streams(api: httpx.Client) -> float:
    """How many campaign streams the server's /metrics says are open."""
    answer = api.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    families = text_string_to_metric_families(answer.text)
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "groupbuy_live_streams" and sample.labels == {"stream": "campaign"}
    )


def sse_events(stream: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of a Server-Sent Events response: `id`, `event` and `data` (parsed),
    comments and the retry field left out."""
    event: dict[str, Any] = {}
    for line in stream.iter_lines():
        if line == "" and "data" in event:
            yield event
            event = {}
        elif line and not line.startswith(":"):
            name, _, value = line.partition(": ")
            if name == "data":
                event["data"] = json.loads(value)
            elif name in ("id", "event"):
                event[name] = value


def test_every_campaign_streams_at_first_then_each_change_and_the_pages_are_served(
    settings: Settings, api: httpx.Client, unique: str
) -> None:
    first_id, second_id = f"all-{unique}", f"all2-{unique}"
    definitions = [campaign(c, max_per_buyer=None) for c in (first_id, second_id)]
    with order_pipeline(settings, *definitions):
        wait_for(lambda: projected_version(settings) == 2, what="both openings projected")
        with api.stream("GET", "/v1/live") as stream:
            events = sse_events(stream)
            at_first = [next(events), next(events)]
            publish_orders(settings, [order(second_id, "site-a", "b1", 5, None)])
            changed = next(events)
        widget_from_a_shop = api.get(
            f"/v1/campaigns/{first_id}", headers={"Origin": "https://shop.example"}
        )
    pages = {path: api.get(path) for path in ("/", "/dashboard.js", "/widget.js")}

    assert sorted(e["data"]["campaign_id"] for e in at_first) == sorted([first_id, second_id])
    assert (changed["data"]["campaign_id"], changed["data"]["committed_quantity"]) == (
        second_id,
        5,
    )
    assert widget_from_a_shop.headers["Access-Control-Allow-Origin"] == "*"
    assert all(page.status_code == 200 for page in pages.values())
    assert "EventSource" in pages["/dashboard.js"].text
    assert pages["/"].headers["content-type"].startswith("text/html")
    assert (
        pages["/widget.js"]
        .headers["content-type"]
        .startswith(("application/javascript", "text/javascript"))
    )


def test_a_live_stream_goes_on_after_the_server_loses_its_listening_connection(
    settings: Settings, api: httpx.Client, unique: str
) -> None:
    campaign_id = f"relisten-{unique}"
    path = f"/v1/campaigns/{campaign_id}/live"
    with order_pipeline(settings, campaign(campaign_id, max_per_buyer=None)):
        wait_for(lambda: projected_version(settings) == 1, what="the opening projected")
        with api.stream("GET", path) as stream:
            events = sse_events(stream)
            opening = next(events)
            cached = api.get(f"/v1/campaigns/{campaign_id}").json()  # now kept in memory
            cut = terminate_listeners(settings)
            publish_orders(settings, [order(campaign_id, "site-a", "b1", 4, None)])
            pushed = next(events)  # the change came while the server did not listen
        wait_for(
            lambda: api.get(f"/v1/campaigns/{campaign_id}").json()["committed_quantity"] == 4,
            timeout=10,
            what="the kept answer dropped",
        )

    assert cut >= 1
    assert (opening["data"]["committed_quantity"], cached["committed_quantity"]) == (0, 0)
    assert (pushed["id"], pushed["data"]["committed_quantity"]) == ("2", 4)


def terminate_listeners(settings: Settings) -> int:
    """End the server's database session that listens for the projector's changes, as a
    failover or a restart of PostgreSQL would; how many sessions that was."""
    listen = f'LISTEN "{ReadModelTables(settings.database_schema).channel}"'
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s", (listen,)
        ).fetchall()
    return len(rows)
