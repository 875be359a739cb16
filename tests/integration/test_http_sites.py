"""Sites over HTTP with their API keys: orders placed, retried and cancelled, read back;
every refusal with its status and the field or key at fault."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from infra.adapters.api_keys import ApiKeys
from infra.adapters.topics import Topics
from infra.services.ingest import run_ingest
from infra.services.project import run_project
from infra.services.relay import run_relay
from infra.settings import Settings
from tests.support.builders import campaign
from tests.support.kafka_io import read_json, wait_for
from tests.support.pipeline import groupbuy, order_pipeline, running
from tests.support.read_models import projected_version


def key_of(settings: Settings, site: str, folder: Path) -> dict[str, str]:
    path = folder / f"{site}.key"
    ApiKeys(settings).issue("site", site, path)
    return {"Authorization": f"Bearer {path.read_text().strip()}"}


def test_a_site_places_and_cancels_over_http_and_a_retried_post_counts_once(
    settings: Settings, api: httpx.Client, unique: str, tmp_path: Path
) -> None:
    campaign_id = f"http-{unique}"
    site_a, site_b = key_of(settings, "site-a", tmp_path), key_of(settings, "site-b", tmp_path)
    # A site's own order id, with what a URL must escape.
    order = {"order_id": "a/1 #x", "campaign_id": campaign_id, "buyer_id": "ann", "quantity": 12}
    second = order | {"order_id": "a-2", "quantity": 3}

    with order_pipeline(settings, campaign(campaign_id, max_per_buyer=None)):
        placed = api.post("/v1/sites/site-a/orders", json=order, headers=site_a)
        retried = api.post("/v1/sites/site-a/orders", json=order, headers=site_a)
        api.post("/v1/sites/site-a/orders", json=second, headers=site_a)
        wait_for(lambda: projected_version(settings) == 3, what="two orders projected")
        cancelled = api.post(
            "/v1/sites/site-a/cancellations",
            json={"order_id": "a-2", "campaign_id": campaign_id},
            headers=site_a,
        )
        wait_for(lambda: projected_version(settings) == 4, what="the cancellation projected")
        results = read_json(settings, placed.json()["result_topic"], 4)
        mine = api.get(placed.headers["Location"], headers=site_a)
        theirs = api.get(placed.headers["Location"].replace("site-a", "site-b"), headers=site_b)
        shown = api.get(f"/v1/campaigns/{campaign_id}").json()

    assert (placed.status_code, retried.status_code, cancelled.status_code) == (202, 202, 202)
    assert placed.json() == retried.json()
    assert placed.json()["result_topic"].endswith("groupbuy.order-results.site-a.v1")
    # The retry is answered as the same order again, and counted once.
    # (The two answers may come in either order: docs/contract.md, "Order results".)
    first = [(r["type"], r.get("duplicate", False)) for r in results if r["order_id"] == "a/1 #x"]
    assert sorted(first) == [("order.accepted", False), ("order.accepted", True)]
    assert shown["committed_quantity"] == 12
    assert (mine.status_code, mine.json()["state"], mine.json()["quantity"]) == (
        200,
        "committed",
        12,
    )
    assert (mine.json()["site_id"], mine.json()["order_id"]) == ("site-a", "a/1 #x")
    assert theirs.status_code == 404  # site-b has no such order


def test_every_refusal_says_who_or_what_is_at_fault(
    settings: Settings, api: httpx.Client, unique: str, tmp_path: Path
) -> None:
    site_a = key_of(settings, "site-a", tmp_path)
    good = {"order_id": "a-1", "campaign_id": f"c-{unique}", "buyer_id": "ann", "quantity": 1}
    post = "/v1/sites/site-a/orders"

    no_key = api.post(post, json=good)
    bad_key = api.post(post, json=good, headers={"Authorization": "Bearer gbk_nope"})
    forged = api.post(post, json=good, headers={"Authorization": "Bearer " + "x" * 10})
    other_site = api.post("/v1/sites/site-b/orders", json=good, headers=site_a)
    in_their_name = api.post(post, json=good | {"site_id": "site-b"}, headers=site_a)
    zero = api.post(post, json=good | {"quantity": 0}, headers=site_a)
    anonymous = {name: value for name, value in good.items() if name != "buyer_id"}
    no_buyer = api.post(post, json=anonymous, headers=site_a)
    price_as_number = api.post(post, json=good | {"max_unit_price": 9.5}, headers=site_a)
    not_json = api.post(post, content=b"{", headers=site_a)

    assert (no_key.status_code, no_key.headers["WWW-Authenticate"]) == (401, "Bearer")
    assert bad_key.status_code == forged.status_code == 401
    assert other_site.status_code == 403
    assert in_their_name.status_code == 403
    assert zero.status_code == 422
    assert zero.json()["detail"][0]["loc"] == ["body", "quantity"]
    assert no_buyer.json()["detail"][0]["loc"] == ["body", "buyer_id"]
    assert price_as_number.json()["detail"][0]["loc"] == ["body", "max_unit_price"]
    assert (not_json.status_code, not_json.json()["detail"][0]["loc"]) == (422, ["body"])


def test_groupbuy_site_key_writes_a_key_for_a_registered_site_only(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    site = f"shop-{unique}"
    unregistered = groupbuy(settings, "site", "key", site, "--out", str(tmp_path / "early"))
    assert groupbuy(settings, "site", "add", site).returncode == 0
    issued = groupbuy(settings, "site", "key", site, "--out", str(tmp_path / "key"))
    again = groupbuy(settings, "site", "key", site, "--out", str(tmp_path / "key"))

    assert unregistered.returncode == 1
    assert "site add" in unregistered.stderr
    assert not (tmp_path / "early").exists()
    assert issued.returncode == 0, issued.stderr
    key = (tmp_path / "key").read_text().strip()
    assert key.startswith("gbk_")
    assert key not in issued.stdout + issued.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "key").st_mode) == 0o600
    assert again.returncode == 1  # never written over
    assert (tmp_path / "key").read_text().strip() == key


def test_an_operator_opens_extends_and_cancels_a_campaign_and_registers_a_site(
    settings: Settings, api: httpx.Client, unique: str, tmp_path: Path
) -> None:
    keys = ApiKeys(settings)
    keys.issue("operator", "olga", tmp_path / "operator.key")
    operator = {"Authorization": f"Bearer {(tmp_path / 'operator.key').read_text().strip()}"}
    site_key = key_of(settings, "site-a", tmp_path)
    campaign_id = f"ops-{unique}"
    definition = campaign(campaign_id).to_json_dict()
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat().replace("+00:00", "Z")

    opened = api.post("/v1/campaigns", json=definition, headers=operator)
    again = api.post("/v1/campaigns", json=definition, headers=operator)
    taken = api.post("/v1/campaigns", json=definition | {"title": "Other"}, headers=operator)
    bad = api.post("/v1/campaigns", json=definition | {"floor_price": 79}, headers=operator)
    as_a_site = api.post("/v1/campaigns", json=definition, headers=site_key)
    anonymous = api.post("/v1/campaigns", json=definition)
    extended = api.post(
        f"/v1/campaigns/{campaign_id}/extend", json={"deadline": later}, headers=operator
    )
    not_a_time = api.post(
        f"/v1/campaigns/{campaign_id}/extend", json={"deadline": "soon"}, headers=operator
    )
    cancelled = api.post(f"/v1/campaigns/{campaign_id}/cancel", headers=operator)
    cancelled_again = api.post(f"/v1/campaigns/{campaign_id}/cancel", headers=operator)
    unknown = api.post(f"/v1/campaigns/none-{unique}/cancel", headers=operator)
    site = f"shop-{unique}"
    registered = api.post("/v1/sites", json={"site_id": site}, headers=operator)
    bad_site = api.post("/v1/sites", json={"site_id": "Not A Slug"}, headers=operator)
    new_key = {"Authorization": f"Bearer {registered.json()['api_key']}"}
    order = {"order_id": "1", "campaign_id": campaign_id, "buyer_id": "b", "quantity": 1}
    its_first_order = api.post(f"/v1/sites/{site}/orders", json=order, headers=new_key)
    # The campaign is cancelled: the order is refused, in the event store.
    with (
        running(run_ingest, settings),
        running(run_relay, settings),
        running(run_project, settings),
    ):
        url = its_first_order.headers["Location"]
        wait_for(lambda: api.get(url, headers=new_key).status_code == 200, what="a refusal")
    refused = api.get(url, headers=new_key).json()

    assert (opened.status_code, opened.json()["status"]) == (201, "open")
    assert opened.headers["Location"] == f"/v1/campaigns/{campaign_id}"
    assert again.status_code == 200
    assert taken.status_code == 409
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "floor_price"]
    assert (as_a_site.status_code, anonymous.status_code) == (403, 401)
    assert (extended.status_code, extended.json()["deadline"]) == (200, later)
    assert not_a_time.json()["detail"][0]["loc"] == ["body", "deadline"]
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert cancelled_again.status_code == 409
    assert unknown.status_code == 404
    assert registered.status_code == 201
    assert registered.json()["topics"] == Topics(settings.topic_prefix).site_topics(site)
    assert bad_site.status_code == 422
    assert its_first_order.status_code == 202  # the key the registration gave works
    assert (refused["state"], refused["reason"], refused["site_id"]) == (
        "rejected",
        "campaign_closed",
        site,
    )
