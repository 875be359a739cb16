"""Readers on a streaming replica (GROUPBUY_READ_DATABASE_URL): the same answers as the
primary once caught up, a clear error when it is down, and its lag said when behind."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from infra.adapters.app import open_app
from infra.adapters.replica import ReplicaLag, current_lsn, replica_lag, wait_for_replay
from infra.local.postgres_replica import LocalPostgresReplica
from infra.settings import Settings
from tests.support.builders import campaign, order
from tests.support.kafka_io import publish_orders, wait_for
from tests.support.pipeline import ServiceProcess, free_port, groupbuy, order_pipeline
from tests.support.read_models import projected_version
from tests.support.services import Services

READER = "GROUPBUY_READ_DATABASE_URL"


@pytest.fixture(scope="module")
def replica(services: Services) -> LocalPostgresReplica:
    """The local launcher's replica (`GROUPBUY_PG_REPLICA=1 make up`), started unless it
    runs; left running, as the primary is."""
    local = LocalPostgresReplica.from_env()
    if services.database_url != local.primary.url:
        pytest.skip("the local replica follows the launcher's PostgreSQL, not this database")
    local.start()
    return local


@pytest.fixture
def reading(settings: Settings, replica: LocalPostgresReplica) -> Settings:
    """The test's settings with its readers on the replica."""
    return replace(settings, read_database_url=replica.url)


@pytest.fixture
def primary(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def standby(replica: LocalPostgresReplica) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(replica.url, autocommit=True) as conn:
        yield conn


def lag_of(standby: psycopg.Connection[Any]) -> ReplicaLag:
    lag = replica_lag(standby)
    assert lag is not None, "not a replica"
    return lag


def caught_up(primary: psycopg.Connection[Any], standby: psycopg.Connection[Any]) -> None:
    assert wait_for_replay(standby, current_lsn(primary), timeout=30), "the replica lags on"


@contextmanager
def serving(settings: Settings, log: Path) -> Iterator[httpx.Client]:
    """`groupbuy serve` with `settings`, and a client of it."""
    port = free_port()
    process = ServiceProcess("serve", settings, log, "--port", str(port))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def answers() -> bool:
                assert process.process.poll() is None, log.read_text()
                try:
                    return client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(answers, timeout=30, what="groupbuy serve to answer")
            yield client
    finally:
        process.stop()


@contextmanager
def replay_paused(standby: psycopg.Connection[Any]) -> Iterator[None]:
    standby.execute("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        standby.execute("SELECT pg_wal_replay_resume()")


@contextmanager
def primary_unreachable(standby: psycopg.Connection[Any]) -> Iterator[None]:
    """The replica told to stream from a port where nothing listens, then told back."""
    row = standby.execute("SHOW primary_conninfo").fetchone()
    assert row is not None
    standby.execute("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1'")
    standby.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        standby.execute(f"ALTER SYSTEM SET primary_conninfo = '{row[0]}'")
        standby.execute("SELECT pg_reload_conf()")


def test_readers_on_the_replica_answer_as_the_primary_does_once_it_caught_up(
    settings: Settings,
    reading: Settings,
    primary: psycopg.Connection[Any],
    standby: psycopg.Connection[Any],
    unique: str,
    tmp_path: Path,
) -> None:
    campaign_id = f"replica-{unique}"
    with order_pipeline(settings, campaign(campaign_id, max_per_buyer=None)):
        publish_orders(
            settings,
            [
                order(campaign_id, "site-a", "b1", 12, None),
                order(campaign_id, "site-b", "b2", 30, "9.00"),
            ],
        )
        wait_for(lambda: projected_version(settings) == 3, what="the orders projected")
    caught_up(primary, standby)

    commands = [
        ("campaign", "show", campaign_id, "--json"),
        ("campaign", "list", "--json"),
        ("demand", campaign_id, "--json"),
    ]
    on_primary = [groupbuy(settings, *command) for command in commands]
    on_replica = [groupbuy(reading, *command) for command in commands]
    paths = ["/v1/campaigns", f"/v1/campaigns/{campaign_id}/prices"]
    paths.append(f"/v1/campaigns/{campaign_id}/demand")
    with serving(settings, tmp_path / "primary.log") as api:
        from_primary = [api.get(path) for path in paths]
    with serving(reading, tmp_path / "replica.log") as api:
        from_replica = [api.get(path) for path in paths]
    # Rebuilt from the replica's store into the primary, compared on the replica.
    verified = groupbuy(reading, "replay", "--verify", "--workers", "1", "--json")

    for there, here in zip(on_primary, on_replica, strict=True):
        assert (there.returncode, here.returncode) == (0, 0), here.stderr
        assert here.stdout == there.stdout
        assert "note:" not in here.stderr  # caught up: nothing to say
    assert f'"campaign_id": "{campaign_id}"' in on_replica[0].stdout
    for there, here in zip(from_primary, from_replica, strict=True):
        assert (there.status_code, here.status_code) == (200, 200)
        assert here.json() == there.json()
        assert "Groupbuy-Replica-Lag" not in there.headers
        assert float(here.headers["Groupbuy-Replica-Lag"]) < 5
    assert verified.returncode == 0, verified.stderr
    outcome = json.loads(verified.stdout)
    assert (outcome["events"], outcome["campaigns_compared"], outcome["differences"]) == (3, 1, [])


def test_readers_name_the_read_url_and_give_up_at_once_when_the_replica_is_down(
    reading: Settings, replica: LocalPostgresReplica, unique: str
) -> None:
    commands = [
        ("campaign", "show", f"replica-{unique}"),
        ("campaign", "list"),
        ("history", f"replica-{unique}", "--at", "2026-01-01T00:00:00Z"),
        ("export", "--format", "csv", "--out", "/dev/null"),
        ("serve", "--port", str(free_port())),
    ]
    replica.stop()
    try:
        for command in commands:
            started = time.monotonic()
            done = groupbuy(reading, *command, timeout=30)
            took = time.monotonic() - started

            assert done.returncode == 3, (command, done.stderr)
            assert took < 10, command
            assert READER in done.stderr
            assert f":{replica.port}/groupbuy" in done.stderr  # where: the replica's address
            assert ":groupbuy@" not in done.stderr  # never the password
    finally:
        replica.start()


def test_the_lag_is_none_on_the_primary_and_nothing_on_a_caught_up_replica(
    primary: psycopg.Connection[Any], standby: psycopg.Connection[Any]
) -> None:
    caught_up(primary, standby)

    assert replica_lag(primary) is None
    # Others may write on the primary meanwhile: wait for a moment with nothing to replay.
    wait_for(lambda: replica_lag(standby) == ReplicaLag(0.0, True), 10, "no lag")


def test_a_replica_that_stopped_replaying_says_how_far_behind_it_is(
    settings: Settings,
    reading: Settings,
    primary: psycopg.Connection[Any],
    standby: psycopg.Connection[Any],
    unique: str,
    tmp_path: Path,
) -> None:
    campaign_id = f"paused-{unique}"
    with order_pipeline(settings, campaign(campaign_id, max_per_buyer=None)):
        wait_for(lambda: projected_version(settings) == 1, what="the opening projected")
        caught_up(primary, standby)
        with replay_paused(standby):
            publish_orders(settings, [order(campaign_id, "site-a", "b1", 12, None)])
            wait_for(lambda: projected_version(settings) == 2, what="the order projected")
            wait_for(lambda: lag_of(standby).seconds > 1.5, 10, "the lag to grow")
            shown = groupbuy(reading, "campaign", "show", campaign_id, "--json")
            with serving(reading, tmp_path / "replica.log") as api:
                answer = api.get("/v1/campaigns", params={"status": "open"})
    lag = lag_of(standby)

    assert shown.returncode == 0, shown.stderr
    assert '"version": 1' in shown.stdout  # as the replica stood: the order not replayed
    assert "note: reading from a replica " in shown.stderr
    assert "s behind its primary (GROUPBUY_READ_DATABASE_URL)" in shown.stderr
    assert float(answer.headers["Groupbuy-Replica-Lag"]) > 1.5
    assert lag.streaming


def test_a_replica_cut_off_from_its_primary_says_it_is_not_streaming(
    settings: Settings,
    reading: Settings,
    primary: psycopg.Connection[Any],
    standby: psycopg.Connection[Any],
    unique: str,
) -> None:
    campaign_id = f"cut-off-{unique}"
    app = open_app(settings)
    try:
        app.open_campaign(campaign(campaign_id), datetime.now(UTC))
    finally:
        app.close()
    caught_up(primary, standby)
    with primary_unreachable(standby):
        wait_for(lambda: not lag_of(standby).streaming, 15, "the stream to stop")
        asked = groupbuy(reading, "demand", campaign_id, "--json")
    wait_for(lambda: lag_of(standby).streaming, 30, "the stream to resume")

    assert asked.returncode == 0, asked.stderr
    assert f'"campaign_id": "{campaign_id}"' in asked.stdout  # what it had, still read
    assert "note: reading from a replica that is not streaming from its primary" in asked.stderr
    assert asked.stderr.strip().endswith(f"({READER})")
