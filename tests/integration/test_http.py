"""`groupbuy serve` over real HTTP: the live read models, as a storefront and its CDN read them."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from infra.adapters.app import open_app
from infra.services.ingest import run_ingest
from infra.services.project import run_project
from infra.services.relay import run_relay
from infra.settings import Settings
from tests.support.builders import campaign, order
from tests.support.kafka_io import make_site_topics, publish_orders, wait_for
from tests.support.pipeline import ServiceProcess, running
from tests.support.read_models import projected_version

INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z")
MONEY = re.compile(r"\d+\.\d{2}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(
    settings: Settings, processes: list[ServiceProcess], tmp_path: Path
) -> Iterator[httpx.Client]:
    port = free_port()
    process = ServiceProcess("serve", settings, tmp_path / "serve.log", "--port", str(port))
    processes.append(process)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

        def answers() -> bool:
            assert process.process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, timeout=30, what="groupbuy serve to answer")
        yield client


def test_a_campaign_is_read_live_with_money_as_strings_and_cacheable(
    settings: Settings, server: httpx.Client, unique: str
) -> None:
    campaign_id = f"web-{unique}"
    app = open_app(settings)
    app.open_campaign(campaign(campaign_id, max_per_buyer=None), datetime.now(UTC))
    app.close()
    assert server.get("/readyz").status_code == 503  # no read models before the projector

    make_site_topics(settings)
    with (
        running(run_ingest, settings),
        running(run_relay, settings),
        running(run_project, settings),
    ):
        publish_orders(settings, [order(campaign_id, "site-a", "b1", 12, None)])
        wait_for(lambda: projected_version(settings) == 2, what="the order projected")
        first = server.get(f"/v1/campaigns/{campaign_id}")
        again = server.get(
            f"/v1/campaigns/{campaign_id}", headers={"If-None-Match": first.headers["ETag"]}
        )
        publish_orders(settings, [order(campaign_id, "site-b", "b2", 9, "9.00")])
        wait_for(lambda: projected_version(settings) == 3, what="the next order projected")
        moved = server.get(
            f"/v1/campaigns/{campaign_id}", headers={"If-None-Match": first.headers["ETag"]}
        )

    assert server.get("/readyz").json() == {"status": "ready"}
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
    history = server.get(f"/v1/campaigns/{campaign_id}/prices").json()
    # A row each time the price moved: at the opening, and at 21 units (8.00 from 20).
    assert [(p["unit_price"], p["committed_quantity"]) for p in history["prices"]] == [
        ("10.00", 0),
        ("8.00", 21),
    ]
    assert all(INSTANT.fullmatch(p["at"]) for p in history["prices"])


def test_campaigns_are_listed_and_filtered_and_bad_requests_name_what_is_wrong(
    settings: Settings, server: httpx.Client, unique: str
) -> None:
    campaign_id = f"listed-{unique}"
    app = open_app(settings)
    app.open_campaign(campaign(campaign_id), datetime.now(UTC))
    app.close()
    with running(run_relay, settings), running(run_project, settings):
        wait_for(lambda: projected_version(settings) == 1, what="the opening projected")

        listed = server.get("/v1/campaigns").json()["campaigns"]
        open_ones = server.get("/v1/campaigns", params={"status": "open"}).json()["campaigns"]
        failed = server.get("/v1/campaigns", params={"status": "failed"}).json()["campaigns"]
        bad = server.get("/v1/campaigns", params={"status": "sold"})
        unknown = server.get(f"/v1/campaigns/none-{unique}")
        unknown_prices = server.get(f"/v1/campaigns/none-{unique}/prices")

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


def test_the_openapi_document_names_every_path(server: httpx.Client) -> None:
    document = server.get("/openapi.json").json()

    assert set(document["paths"]) == {
        "/healthz",
        "/readyz",
        "/v1/campaigns",
        "/v1/campaigns/{campaign_id}",
        "/v1/campaigns/{campaign_id}/prices",
    }
