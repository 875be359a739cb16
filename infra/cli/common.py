"""What every `groupbuy` command shares: its exit codes, and failing fast on a missing service."""

from __future__ import annotations

import argparse
import socket
from typing import Any

import psycopg

from infra.settings import Settings

# Exit codes scripts can rely on (argparse's usage errors exit with 2).
INVALID = 1  # bad input: a file, a field, a time
UNREACHABLE = 3  # a service (PostgreSQL, Kafka) did not answer
NOT_FOUND = 4  # no such campaign
REFUSED = 5  # the campaign's state forbids it: closed, or already open differently
DIFFERENT = 6  # `groupbuy replay --verify` found rebuilt and live read models differ

EXIT_CODES = (
    f"exit codes: 0 done, {INVALID} bad input, 2 bad usage, {UNREACHABLE} a service "
    f"unreachable, {NOT_FOUND} no such campaign, {REFUSED} refused by the campaign's state, "
    f"{DIFFERENT} read models differ (replay --verify)"
)


class CommandError(Exception):
    """Something a person can act on; the CLI prints it and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = INVALID) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def connect_postgres(settings: Settings, **options: Any) -> psycopg.Connection[Any]:
    """A connection to the configured database, or an error naming its address."""
    try:
        return psycopg.connect(settings.database_url, connect_timeout=5, **options)
    except psycopg.OperationalError as error:
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise unreachable("PostgreSQL", postgres_address(settings), reason) from None


def require_postgres(settings: Settings) -> None:
    """Raise, naming the address, unless the configured database accepts a connection."""
    connect_postgres(settings).close()


def require_kafka(settings: Settings) -> None:
    """Raise, naming the addresses tried, unless one bootstrap server accepts a connection."""
    servers = [server.strip() for server in settings.kafka_bootstrap.split(",")]
    reasons = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
            return
        except (OSError, ValueError) as error:
            reasons.append(f"{server}: {error}" if len(servers) > 1 else str(error))
    raise unreachable("Kafka", settings.kafka_bootstrap, "; ".join(reasons))


def unreachable(service: str, address: str, reason: str) -> CommandError:
    variable = "GROUPBUY_DATABASE_URL" if service == "PostgreSQL" else "GROUPBUY_KAFKA_BOOTSTRAP"
    return CommandError(
        f"cannot reach {service} at {address}: {reason} (check {variable}, or run `make up`)",
        UNREACHABLE,
    )


def postgres_address(settings: Settings) -> str:
    return settings.database_url.rsplit("@", 1)[-1]  # never print the password


def positive(kind: type[int] | type[float]) -> Any:
    """An argparse type: a number of `kind` above 0."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse
