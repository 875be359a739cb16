"""`python -m infra.local up|down|status`: start, stop or show the local Kafka and PostgreSQL
(and, with GROUPBUY_PG_REPLICA=1, a streaming replica of that PostgreSQL)."""

from __future__ import annotations

import os
import shlex
import sys

from infra.local.common import LauncherError
from infra.local.kafka import LocalKafka
from infra.local.kafka_cluster import LocalKafkaCluster, kafka_nodes
from infra.local.postgres import LocalPostgres
from infra.local.postgres_replica import LocalPostgresReplica
from infra.local.secure_kafka import LocalSecureKafka
from infra.local.secure_postgres import LocalSecurePostgres

KAFKA_VAR, DATABASE_VAR = "GROUPBUY_KAFKA_BOOTSTRAP", "GROUPBUY_DATABASE_URL"
READ_DATABASE_VAR = "GROUPBUY_READ_DATABASE_URL"


def up() -> None:
    """Start what is not configured; print `export` lines for `eval "$(make -s up)"`. With
    GROUPBUY_SECURE=1, the broker is the secured one, and the exports say how to reach it;
    with GROUPBUY_KAFKA_NODES=3, a cluster of three, and the bootstrap names them all; with
    GROUPBUY_PG_REPLICA=1, readers are pointed at a replica of the database."""
    values = {KAFKA_VAR: os.environ.get(KAFKA_VAR), DATABASE_VAR: os.environ.get(DATABASE_VAR)}
    if not values[DATABASE_VAR]:
        postgres = LocalSecurePostgres.from_env() if secure() else LocalPostgres.from_env()
        log(postgres.start())
        values[DATABASE_VAR] = postgres.url
    if replica() and not os.environ.get(READ_DATABASE_VAR):
        values[READ_DATABASE_VAR] = start_replica(str(values[DATABASE_VAR]))
    if not values[KAFKA_VAR] and secure():
        secured = LocalSecureKafka.from_env()
        log(secured.start())
        values |= secured.exports()
    elif not values[KAFKA_VAR] and kafka_nodes() > 1:
        cluster = LocalKafkaCluster.from_env()
        log(cluster.start())
        values[KAFKA_VAR] = cluster.bootstrap
    elif not values[KAFKA_VAR]:
        kafka = LocalKafka.from_env()
        log(kafka.start())
        values[KAFKA_VAR] = kafka.bootstrap
    for name, value in values.items():
        print(f"export {name}={shlex.quote(str(value))}")


def start_replica(database_url: str) -> str:
    """Start the local replica and return its URL; it can follow only the plain local
    PostgreSQL, so another database is refused rather than given a stranger's copy."""
    replica = LocalPostgresReplica.from_env()
    if database_url != replica.primary.url:
        raise LauncherError(
            f"GROUPBUY_PG_REPLICA=1 starts a replica of the local PostgreSQL only "
            f"(not with GROUPBUY_SECURE=1, nor with {DATABASE_VAR} set elsewhere); "
            f"for another database, set {READ_DATABASE_VAR} to its replica"
        )
    log(replica.start())
    return replica.url


def down() -> None:
    # The replica before its primary: stopped after, it would log its lost primary. Those
    # started only on request are named only when they ran.
    for name, service, always in (
        ("Kafka", LocalKafka.from_env(), True),
        ("the secured Kafka", LocalSecureKafka.from_env(), False),
        ("the Kafka cluster", LocalKafkaCluster.from_env(max(3, kafka_nodes())), False),
        ("the PostgreSQL replica", LocalPostgresReplica.from_env(), False),
        ("PostgreSQL", LocalPostgres.from_env(), True),
        ("the PostgreSQL with TLS", LocalSecurePostgres.from_env(), False),
    ):
        if service.stop():
            log(f"{name} stopped")
        elif always:
            log(f"{name} was not running")


def status() -> None:
    kafka, postgres = LocalKafka.from_env(), LocalPostgres.from_env()
    log(f"Kafka at {kafka.bootstrap}: {'running' if kafka.is_running() else 'stopped'}")
    secured = LocalSecureKafka.from_env()
    if secured.is_running():
        log(f"the secured Kafka (SASL_SSL) at {secured.bootstrap}: running")
    cluster = LocalKafkaCluster.from_env(max(3, kafka_nodes()))
    running = [node for node in cluster.nodes if node.is_running()]
    if running:
        log(
            f"the Kafka cluster: {len(running)} of {len(cluster.nodes)} nodes running at "
            + ",".join(node.bootstrap for node in running)
        )
    tls = LocalSecurePostgres.from_env()
    if tls.is_running():
        log(f"the PostgreSQL with TLS at {tls.url}: running")
    log(f"PostgreSQL at {postgres.url}: {'running' if postgres.is_running() else 'stopped'}")
    replica = LocalPostgresReplica.from_env()
    if replica.is_running():
        log(f"the PostgreSQL replica at {replica.url}: running")


def replica() -> bool:
    return os.environ.get("GROUPBUY_PG_REPLICA", "") not in ("", "0")


def secure() -> bool:
    return os.environ.get("GROUPBUY_SECURE", "") not in ("", "0")


def log(line: str) -> None:
    # stdout carries only the export lines, so `eval` sees nothing else.
    print(line, file=sys.stderr, flush=True)


COMMANDS = {"up": up, "down": down, "status": status}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in COMMANDS:
        log("usage: python -m infra.local up|down|status")
        return 2
    try:
        COMMANDS[argv[0]]()
    except LauncherError as error:
        log(f"infra: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
