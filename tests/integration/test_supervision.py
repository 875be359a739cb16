"""A service that stops on its own takes its process down, non-zero, naming it; what may pass
is retried with growing pauses; no connection can hang on a silent peer."""

from __future__ import annotations

import logging
import threading
import time
import zlib
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka.errors import KafkaTimeoutError
from psycopg.sql import SQL, Identifier

from infra.adapters.app import open_app, recorder_of
from infra.adapters.table_follower import TableFollower
from infra.settings import Settings
from tests.support.kafka_io import wait_for
from tests.support.pipeline import ServiceProcess


def holds_advisory_lock(conn: psycopg.Connection[Any], key: int) -> bool:
    """Whether some session holds the advisory lock `key` (a relay follower taking its turn)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = 0 AND objid = %s AND objsubid = 1",
        (key,),
    ).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("command", ["run", "relay"])
def test_a_relay_that_cannot_read_its_outbox_stops_its_process_non_zero_naming_it(
    command: str, settings: Settings, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    log = tmp_path / f"{command}.log"
    service = ServiceProcess(command, settings, log)
    processes.append(service)
    outbox_turn = zlib.crc32(f"{settings.database_schema}.outbox".encode())
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        wait_for(
            lambda: holds_advisory_lock(conn, outbox_turn) or service.process.poll() is not None,
            timeout=60,
            what="the relay publishing the outbox",
        )
        assert service.process.poll() is None, log.read_text()
        # A column gone is no blip: retrying the same SELECT would fail forever. (Not the
        # table: a service still starting would create it again.)
        outbox = Identifier(settings.database_schema, "groupbuying_outbox")
        conn.execute(SQL("ALTER TABLE {} RENAME COLUMN headers TO gone").format(outbox))
    renamed = time.monotonic()

    code = service.process.wait(timeout=60)

    output = log.read_text()
    assert code == 1, output
    assert time.monotonic() - renamed < 10, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"groupbuy: {'run: ' if command == 'run' else ''}relay: "), last
    assert f"{settings.database_schema}.outbox stopped: UndefinedColumn" in last
    assert "Traceback" in output  # the traceback is in the log, above that line


def test_a_follower_retries_a_lost_broker_with_pauses_that_double_then_start_over(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    calls: list[float] = []
    outcomes: list[int | Exception] = [
        KafkaTimeoutError("batch expired"),
        KafkaTimeoutError("batch expired"),
        1,  # one published: working again
        KafkaTimeoutError("batch expired"),
    ]

    def publish(conn: psycopg.Connection[Any]) -> int:
        calls.append(time.monotonic())
        if not outcomes:
            stop.set()
            return 0
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    follower = TableFollower(
        settings.database_url, f"{settings.database_schema}.test", "test_channel", publish
    )
    with caplog.at_level(logging.WARNING):
        follower.run(stop)

    pauses = [later - earlier for earlier, later in pairwise(calls)]
    assert 0.5 <= pauses[0] < 0.9, pauses
    assert 1.0 <= pauses[1] < 1.4, pauses
    assert pauses[2] < 0.2, pauses  # after a success, at once
    assert 0.5 <= pauses[3] < 0.9, pauses  # and the pauses start over
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "(attempt 2 failed); retrying in 1.0 s" in warnings[1]
    assert "(attempt 1 failed); retrying in 0.5 s" in warnings[2]


def test_a_follower_raises_what_would_fail_again_instead_of_retrying_it(
    settings: Settings,
) -> None:
    calls = []

    def publish(conn: psycopg.Connection[Any]) -> int:
        calls.append(1)
        raise OverflowError("date value out of range")

    follower = TableFollower(
        settings.database_url, f"{settings.database_schema}.test", "test_channel", publish
    )
    with pytest.raises(OverflowError):
        follower.run(threading.Event())

    assert len(calls) == 1


def test_the_event_store_and_the_relay_connect_with_keepalives_and_a_lock_timeout(
    settings: Settings,
) -> None:
    app = open_app(settings)
    try:
        with recorder_of(app).datastore.get_connection() as conn:
            client = conn.info.get_parameters()
            server = {
                name: conn.execute(SQL("SHOW {}").format(Identifier(name))).fetchall()[0][name]
                for name in ("tcp_keepalives_idle", "tcp_user_timeout", "lock_timeout")
            }
    finally:
        app.close()
    follower = TableFollower(settings.database_url, "unused", "unused", lambda conn: 0)
    with psycopg.connect(follower.conninfo) as conn:
        relay = conn.info.get_parameters()

    for parameters in (client, relay):
        assert parameters["keepalives"] == "1"
        assert parameters["keepalives_idle"] == "30"
        assert parameters["tcp_user_timeout"] == "60000"
        assert parameters["connect_timeout"] == "10"
    assert server == {
        "tcp_keepalives_idle": "30",
        "tcp_user_timeout": "60000",
        "lock_timeout": "30s",
    }
