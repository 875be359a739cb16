"""Every stored domain event reaches `groupbuy.campaign-events.v1`, in order, at least once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from domain.outcomes import Order
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.services.relay import run_relay
from infra.services.supervision import ServiceStoppedError
from infra.settings import Settings
from tests.support.builders import campaign
from tests.support.kafka_io import read_until
from tests.support.pipeline import ServiceProcess, running


def versions_by_campaign(records: list) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for record in records:
        message = json.loads(record.value)
        seen.setdefault(message["campaign_id"], []).append(message["version"])
    return seen


def test_relayed_events_carry_the_contract_fields_in_campaign_order(
    settings: Settings, unique: str
) -> None:
    campaign_id = f"relay-{unique}"
    app = open_app(settings)
    now = datetime.now(UTC)
    app.open_campaign(campaign(campaign_id), now)
    app.place_order(campaign_id, Order("site-a:1", "site-a", "b-1", 2, None), now)
    app.place_order(campaign_id, Order("site-a:2", "site-a", "b-2", 9, None), now)  # too many
    app.close()
    topic = Topics(settings.topic_prefix).campaign_events

    with running(run_relay, settings):
        records = read_until(settings, topic, lambda rs: len(rs) >= 3)

    messages = [json.loads(r.value) for r in records]
    assert [(m["type"], m["version"]) for m in messages] == [
        ("campaign.opened", 1),
        ("commitment.placed", 2),
        ("order.rejected", 3),
    ]
    assert {m["campaign_id"] for m in messages} == {campaign_id}
    assert all(r.key == campaign_id.encode() for r in records)
    assert all(m["occurred_at"].endswith("Z") for m in messages)
    placed = messages[1]
    assert (placed["order_id"], placed["quantity"], placed["unit_price"]) == (
        "site-a:1",
        2,
        "10.00",
    )
    assert dict(records[2].headers) == {"type": b"order.rejected", "version": b"3"}
    assert messages[2]["reason"] == "per_buyer_limit"


def test_relay_killed_mid_stream_resumes_and_misses_no_event(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    campaign_ids = [f"relay{n}-{unique}" for n in range(4)]
    app = open_app(settings)
    now = datetime.now(UTC)
    for campaign_id in campaign_ids:
        app.open_campaign(campaign(campaign_id, max_per_buyer=None), now)
    topic = Topics(settings.topic_prefix).campaign_events
    relay = ServiceProcess("relay", settings, tmp_path / "relay-1.log")
    for n in range(3000):
        order = Order(f"site-a:{n}", "site-a", f"b-{n}", 1, None)
        app.place_order(campaign_ids[n % 4], order, now)
        if n == 1500:
            relay.kill()  # while events keep being stored
    app.close()
    relay = ServiceProcess("relay", settings, tmp_path / "relay-2.log")
    try:
        records = read_until(
            settings,
            topic,
            lambda rs: sum(map(len, map(set, versions_by_campaign(rs).values()))) >= 3004,
            timeout=120,
        )
    finally:
        relay.stop()

    seen = versions_by_campaign(records)
    for campaign_id in campaign_ids:
        versions = seen[campaign_id]
        assert sorted(set(versions)) == list(range(1, 752))
        # Duplicates may follow a crash, but each campaign's first copies arrive in order.
        firsts = [v for i, v in enumerate(versions) if v not in versions[:i]]
        assert firsts == sorted(firsts)


def test_a_store_restored_behind_what_was_published_stops_the_relay_naming_the_fix(
    settings: Settings, unique: str
) -> None:
    """Restored to an instant before the relay's last publication, the event store would
    give new events the ids of published ones, which the relay would skip: it refuses."""
    campaign_id = f"restored-{unique}"
    app = open_app(settings)
    now = datetime.now(UTC)
    app.open_campaign(campaign(campaign_id), now)
    app.place_order(campaign_id, Order("site-a:1", "site-a", "b-1", 2, None), now)
    topic = Topics(settings.topic_prefix).campaign_events
    with running(run_relay, settings):
        read_until(settings, topic, lambda rs: len(rs) >= 2)
    # The restore: the commitment and the relay's position go back to before it.
    events = f"{settings.database_schema}.groupbuying_events"
    with psycopg.connect(settings.postgres_conninfo, autocommit=True) as conn:
        (last,) = conn.execute(f"SELECT max(notification_id) FROM {events}").fetchone() or (0,)
        conn.execute(f"DELETE FROM {events} WHERE notification_id = %s", (last,))
        conn.execute(
            f"UPDATE {settings.database_schema}.groupbuying_tracking SET notification_id = 0 "
            "WHERE application_name = 'relay:campaign-events'"
        )
    stop, ended = threading.Event(), []
    relay = threading.Thread(target=lambda: ended.append(stopped_by(run_relay, settings, stop)))
    relay.start()
    relay.join(timeout=30)
    stop.set()  # in case it went on (as it did before it checked)
    relay.join(timeout=30)
    (error,) = ended
    assert isinstance(error, ServiceStoppedError), error
    assert f"published events up to id {last}" in str(error)
    assert f"store's last is {last - 1}" in str(error)

    # The fix it names, and the next event is published (not skipped as published).
    fix = str(error).split("then start the relay again: ")[1].split(";")[0]
    with psycopg.connect(settings.postgres_conninfo, autocommit=True) as conn:
        conn.execute(fix)
    app.forget(campaign_id)
    app.place_order(campaign_id, Order("site-a:3", "site-a", "b-3", 1, None), now)
    app.close()
    with running(run_relay, settings):
        records = read_until(
            settings, topic, lambda rs: any(b"site-a:3" in r.value for r in rs), 30
        )
    assert any(json.loads(r.value).get("order_id") == "site-a:3" for r in records)


def stopped_by(service: Callable[..., None], *arguments: object) -> BaseException | None:
    """What `service` raised when it ended, or None."""
    try:
        service(*arguments)
    except BaseException as error:
        return error
    return None
