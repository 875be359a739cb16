"""What the `groupbuy` commands share: exit codes, failing fast, reading files, the stores."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError

from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.timefmt import parse_instant
from infra.adapters.app import ensure_schema, open_app
from infra.adapters.replica import replica_lag
from infra.settings import READ_DATABASE_VARIABLE, Settings, database_address

# Exit codes scripts can rely on (argparse's usage errors exit with 2).
INVALID = 1  # bad input: a file, a field, a time, a setting
STOPPED = 1  # a service stopped on its own: a supervisor restarts the process
UNREACHABLE = 3  # a service (PostgreSQL, Kafka) did not answer
NOT_FOUND = 4  # no such campaign
REFUSED = 5  # the campaign's state forbids it: closed, or already open differently
DIFFERENT = 6  # `groupbuy replay --verify` found rebuilt and live read models differ
NOTED_LAG = 1.0  # seconds a replica may be behind before its readers are told

EXIT_CODES = (
    f"exit codes: 0 done, {INVALID} bad input, 2 bad usage, {UNREACHABLE} a service "
    f"unreachable, {NOT_FOUND} no such campaign, {REFUSED} refused by the campaign's state, "
    f"{DIFFERENT} read models differ (replay --verify); a service that stops on its own "
    f"exits with {STOPPED}"
)


class CommandError(Exception):
    """Something a person can act on; the CLI prints it and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = INVALID) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def connect_postgres(settings: Settings, **options: Any) -> psycopg.Connection[Any]:
    """A connection to the configured database, or an error naming its address; on a
    replica (`Settings.for_reading`), a note on stderr when it is behind."""
    try:
        conn = psycopg.connect(settings.postgres_conninfo, **options)
    except psycopg.OperationalError as error:
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise unreachable(
            "PostgreSQL", postgres_address(settings), reason, settings.database_variable
        ) from None
    if settings.reading:
        note_replica_lag(conn, settings.database_variable)
    return conn


def note_replica_lag(conn: psycopg.Connection[Any], variable: str) -> None:
    """Tell the person reading when the replica is behind or has lost its primary: what
    they see may be older than what the writers have done."""
    lag = replica_lag(conn)
    conn.rollback()  # ends the transaction the query began, if any: the caller's are its own
    if lag is not None and (lag.seconds > NOTED_LAG or not lag.streaming):
        print(lag.note(variable), file=sys.stderr)


def require_postgres(settings: Settings) -> None:
    """Raise, naming the address, unless the configured database accepts a connection."""
    connect_postgres(settings).close()


def require_schema(settings: Settings) -> None:
    """Create GROUPBUY_DATABASE_SCHEMA unless it exists; an error a person can act on."""
    try:
        ensure_schema(settings)
    except psycopg.Error as error:
        raise CommandError(
            f"cannot create the schema {settings.database_schema!r} "
            f"(GROUPBUY_DATABASE_SCHEMA): {str(error).strip()}",
            UNREACHABLE if isinstance(error, psycopg.OperationalError) else INVALID,
        ) from None


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
    raise unreachable(
        "Kafka", settings.kafka_bootstrap, "; ".join(reasons), "GROUPBUY_KAFKA_BOOTSTRAP"
    )


def unreachable(service: str, address: str, reason: str, variable: str) -> CommandError:
    """`service`, configured by `variable`, did not answer at `address` for `reason`."""
    up = "GROUPBUY_PG_REPLICA=1 make up" if variable == READ_DATABASE_VARIABLE else "make up"
    return CommandError(
        f"cannot reach {service} at {address}: {reason} (check {variable}, or run `{up}`)",
        UNREACHABLE,
    )


def postgres_address(settings: Settings) -> str:
    return database_address(settings.database_url)  # never the password


def positive(kind: type[int] | type[float]) -> Any:
    """An argparse type: a number of `kind` above 0."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


@contextmanager
def event_store(settings: Settings, *, read_only: bool = False) -> Iterator[GroupBuying]:
    """The event store; an unreachable database is named (exit 3), not a traceback.

    `read_only`: the analysts' commands, which a role with SELECT alone may run (docs/
    contract.md, "Commands"): they create no schema and no table.
    """
    require_postgres(settings)  # fails fast, with the address and no password
    if not read_only:
        require_schema(settings)
    try:
        app = open_app(settings, CREATE_TABLE="n") if read_only else open_app(settings)
    except (OperationalError, InterfaceError) as error:
        raise CommandError(f"cannot open the event store: {error}", exit_code=UNREACHABLE) from None
    try:
        yield app
    finally:
        app.close()


def campaign_events(app: GroupBuying, campaign_id: str) -> list[Any]:
    """Every stored event of one campaign, in order; an unknown id is a clear error."""
    events = list(app.events.get(Campaign.create_id(campaign_id)))
    if not events:
        raise CommandError(
            f"no campaign {campaign_id!r} in the event store; "
            "check the id with `groupbuy campaign list`",
            NOT_FOUND,
        )
    return events


def read_models(settings: Settings) -> psycopg.Connection[Any]:
    """A connection to the read models, or an error naming the database's address."""
    return connect_postgres(settings, autocommit=True)


def json_file(path: str) -> Any:
    """The JSON document in `path` (- for stdin); errors name the file and where it broke."""
    name = "stdin" if path == "-" else path
    try:
        content = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"cannot read {name}: {error}") from None
    try:
        return json.loads(content)
    except json.JSONDecodeError as error:
        raise CommandError(f"{name} is not JSON: {error}") from None


def instant_argument(option: str, value: str) -> datetime:
    try:
        return parse_instant(value)
    except ValueError as error:
        raise CommandError(f"{option} {error}") from None


def require_extra(module: str, extra: str, what: str) -> None:
    """Refuse `what` with the extra to install when its optional `module` is missing (the
    services install without the analysts' and the web's dependencies)."""
    import importlib

    try:
        importlib.import_module(module)  # about to be used: its import is no extra cost
    except ImportError:
        raise CommandError(
            f"{what} needs {module}, which is not installed: pip install 'groupbuy[{extra}]'",
            INVALID,
        ) from None
