"""Where the tests' Kafka and PostgreSQL come from: env vars, Docker, or the local launchers."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from infra.local.kafka import LocalKafka
from infra.local.postgres import LocalPostgres
from infra.settings import KafkaSecurity

KAFKA_IMAGE = "apache/kafka:4.3.1"
POSTGRES_IMAGE = "postgres:17"


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    database_url: str
    origin: str
    # How groupbuy's services authenticate: from the GROUPBUY_KAFKA_* variables, with a
    # broker named by GROUPBUY_KAFKA_BOOTSTRAP (`GROUPBUY_SECURE=1 make up` prints both).
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def client_options(self) -> dict[str, Any]:
        """What a test's own Kafka client (not groupbuy's factory) connects with."""
        return {"bootstrap_servers": self.kafka_bootstrap} | self.kafka_security.client_options()


@contextlib.contextmanager
def provide_services() -> Iterator[Services]:
    """Environment variables win; else testcontainers where Docker answers; else local launchers."""
    kafka = os.environ.get("GROUPBUY_KAFKA_BOOTSTRAP")
    database = os.environ.get("GROUPBUY_DATABASE_URL")
    if kafka and database:
        yield Services(kafka, database, "environment variables", KafkaSecurity.from_env())
    elif docker_answers():
        with _containers() as (container_kafka, container_database):
            yield Services(
                kafka or container_kafka, database or container_database, "testcontainers"
            )
    else:
        yield Services(kafka or _local_kafka(), database or _local_postgres(), "local launchers")


def _local_kafka() -> str:
    local = LocalKafka.from_env()
    local.start()
    return local.bootstrap


def _local_postgres() -> str:
    local = LocalPostgres.from_env()
    local.start()
    return local.url


def docker_answers() -> bool:
    try:
        import docker  # imported late: only needed where a Docker engine may answer

        docker.from_env(timeout=3).ping()
    except Exception:  # any failure means: no usable engine here
        return False
    return True


@contextlib.contextmanager
def _containers() -> Iterator[tuple[str, str]]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.postgres import PostgresContainer

    port = _free_port()
    # The apache/kafka image runs a single KRaft node; it must advertise the host's port.
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    with kafka, PostgresContainer(POSTGRES_IMAGE, driver=None) as postgres:
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        yield f"127.0.0.1:{port}", postgres.get_connection_url()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
