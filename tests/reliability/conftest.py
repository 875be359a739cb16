"""Fault injection's scale (short in `make test`, long under GROUPBUY_SOAK=1), its own
Kafka and PostgreSQL, and the figures each run reports."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator

import psycopg
import pytest

from infra.settings import Settings
from tests.support.faults import SCALE, SOAK, PrivateServices, Scale


@pytest.fixture
def scale() -> Scale:
    return SCALE


@pytest.fixture
def seed(report: Callable[[str], None]) -> int:
    """Random each run, reported, and repeatable with GROUPBUY_FAULT_SEED."""
    chosen = int(os.environ.get("GROUPBUY_FAULT_SEED") or random.randrange(1_000_000))
    report(f"seed {chosen}")
    return chosen


@pytest.fixture(scope="session")
def private_services() -> Iterator[PrivateServices]:
    """A broker and a database of these tests' own: the shared ones must not be disturbed."""
    private = PrivateServices.create()
    try:
        private.start()
        yield private
    finally:
        private.down()


@pytest.fixture
def private_settings(private_services: PrivateServices, unique: str) -> Settings:
    return settings_on(private_services, unique)


def settings_on(private: PrivateServices, unique: str) -> Settings:
    """A test's settings on private services: a schema and a topic prefix of its own."""
    schema = f"test_{unique}"
    with psycopg.connect(private.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return Settings(
        database_url=private.database_url,
        kafka_bootstrap=private.kafka_bootstrap,
        topic_prefix=f"test-{unique}.",
        database_schema=schema,
    )


FAULT_REPORTS = pytest.StashKey[list[str]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Add a line about this test to the "faults injected" section of the summary."""

    def add(line: str) -> None:
        lines = request.config.stash.setdefault(FAULT_REPORTS, [])
        lines.append(f"{request.node.name}: {line}")

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(FAULT_REPORTS, [])
    if lines:
        terminalreporter.section(f"faults injected ({'soak' if SOAK else 'short'})")
        for line in lines:
            terminalreporter.write_line(line)
