"""The eventsourcing library's PostgreSQL store works on the database under test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresFactory

from infra.settings import eventsourcing_env


class Counter(Aggregate):
    """A throwaway aggregate: the store, not the domain, is under test here."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    @event("Incremented")
    def increment(self, by: int) -> None:
        self.count += by


class Counters(Application[object]):
    pass


@pytest.fixture
def env(database_url: str, pg_schema: str) -> dict[str, str]:
    return eventsourcing_env(database_url, schema=pg_schema) | {"CREATE_TABLE": "y"}


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[Counters]:
    application = Counters(env=env)
    yield application
    application.close()


def test_database_is_postgresql(
    database_url: str, report_version: Callable[[str, str], None]
) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT version()").fetchone()
    assert row is not None
    report_version("Database", row[0])
    assert row[0].startswith("PostgreSQL ")


def test_aggregate_saved_in_postgres_is_reloaded_with_its_events(
    app: Counters, env: dict[str, str]
) -> None:
    counter = Counter("orders")
    counter.increment(by=2)
    counter.increment(by=3)
    app.save(counter)

    reopened = Counters(env=env)  # a second application: nothing comes from memory
    try:
        reloaded = reopened.repository.get(counter.id)
    finally:
        reopened.close()

    assert isinstance(reloaded, Counter)
    assert (reloaded.name, reloaded.count, reloaded.version) == ("orders", 5, 3)


def test_tracking_record_is_written_and_read_back(env: dict[str, str]) -> None:
    with PostgresFactory(env) as factory:
        recorder = factory.tracking_recorder()
        recorder.insert_tracking(Tracking(application_name="orders:0", notification_id=41))
        recorder.insert_tracking(Tracking(application_name="orders:0", notification_id=42))

        assert recorder.max_tracking_id("orders:0") == 42
        assert recorder.has_tracking_id("orders:0", 41)
        assert recorder.max_tracking_id("orders:1") is None
