"""Session-wide services for integration tests, and per-test isolation (topics, schemas)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from kafka import KafkaAdminClient

from infra.adapters.kafka_clients import delete_topics_named
from infra.settings import Settings
from tests.support.kafka_io import wait_for
from tests.support.pipeline import ServiceProcess, free_port
from tests.support.services import Services, provide_services


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with provide_services() as provided:
        yield provided


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def database_url(services: Services) -> str:
    return services.database_url


@pytest.fixture(scope="session")
def kafka_options(services: Services) -> dict[str, Any]:
    """What a test's own Kafka client connects with: the broker, and its credentials."""
    return services.client_options()


@pytest.fixture
def unique() -> str:
    """A short random suffix, so that no two tests share ids, topics or schemas."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topic_prefix(unique: str) -> str:
    return f"test-{unique}."


@pytest.fixture
def kafka_admin(services: Services) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(**services.client_options(), client_id="groupbuy-tests")
    yield admin
    admin.close()


@pytest.fixture
def pg_schema(database_url: str, unique: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    schema = f"test_{unique}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield schema
    with psycopg.connect(database_url, autocommit=True) as conn:
        # With it go the schemas `groupbuy replay` made beside it (rebuilt and retired sets).
        beside = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (f"{schema}_",)
        ).fetchall()
        for name in [schema, *(row[0] for row in beside)]:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


SERVICE_VERSIONS = pytest.StashKey[dict[str, str]]()


@pytest.fixture
def report_version(request: pytest.FixtureRequest) -> object:
    """Record a service's version for the summary at the end of the test log."""

    def report(service: str, version: str) -> None:
        request.config.stash.setdefault(SERVICE_VERSIONS, {})[service] = version

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    versions = terminalreporter.config.stash.get(SERVICE_VERSIONS, {})
    if versions:
        terminalreporter.section("services under test")
        for service, version in sorted(versions.items()):
            terminalreporter.write_line(f"{service}: {version}")


@pytest.fixture
def settings(services: Services, topic_prefix: str, pg_schema: str) -> Iterator[Settings]:
    """groupbuy's configuration for one test: its own topics and its own schema."""
    settings = Settings(
        database_url=services.database_url,
        kafka_bootstrap=services.kafka_bootstrap,
        topic_prefix=topic_prefix,
        database_schema=pg_schema,
        kafka_security=services.kafka_security,
    )
    yield settings
    delete_topics_named(settings, topic_prefix)


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    """Service processes a test starts; stopped when it ends, pass or fail."""
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def api(
    settings: Settings, processes: list[ServiceProcess], tmp_path: Path
) -> Iterator[httpx.Client]:
    """`groupbuy serve` in a process of its own on a free port, and a client of it."""
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
