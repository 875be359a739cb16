"""`groupbuy run` stops every service when one stops on its own, and says which and why."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from psycopg import OperationalError
from psycopg.errors import UndefinedTable

import infra.services
from infra.adapters.table_follower import is_transient
from infra.services import run_all
from infra.services.supervision import ServiceStoppedError
from infra.settings import Settings

SETTINGS = Settings(database_url="postgresql://u:p@127.0.0.1:1/db", kafka_bootstrap="127.0.0.1:1")


class Steady:
    """A service that runs until asked to stop, and remembers that it was."""

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def __call__(self, settings: Settings, stop: threading.Event) -> None:
        stop.wait()
        self.stopped.set()


def broken(settings: Settings, stop: threading.Event) -> None:
    time.sleep(0.05)
    raise OverflowError("date value out of range")


def done_early(settings: Settings, stop: threading.Event) -> None:
    time.sleep(0.05)


def test_a_service_that_raises_stops_the_others_and_is_named_with_its_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    steady = Steady()
    monkeypatch.setattr(infra.services, "SERVICES", {"ingest": (steady, ""), "relay": (broken, "")})
    stop = threading.Event()

    started = time.monotonic()
    with pytest.raises(ServiceStoppedError) as raised:
        run_all(SETTINGS, stop)

    assert str(raised.value) == "relay stopped: OverflowError: date value out of range"
    assert steady.stopped.is_set()
    assert time.monotonic() - started < 2
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "relay stopped: OverflowError: date value out of range"
    assert record.exc_info is not None  # the traceback goes to the log


def test_a_service_that_ends_while_nobody_asked_it_to_stops_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steady = Steady()
    monkeypatch.setattr(
        infra.services, "SERVICES", {"clock": (done_early, ""), "project": (steady, "")}
    )

    with pytest.raises(ServiceStoppedError, match="clock stopped though nobody asked it to"):
        run_all(SETTINGS, threading.Event())

    assert steady.stopped.is_set()


def test_services_asked_to_stop_end_without_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = Steady(), Steady()
    monkeypatch.setattr(infra.services, "SERVICES", {"a": (first, ""), "b": (second, "")})
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()

    run_all(SETTINGS, stop)

    assert first.stopped.is_set()
    assert second.stopped.is_set()


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OperationalError("server closed the connection unexpectedly"), True),
        (KafkaTimeoutError("batch expired"), True),
        (UndefinedTable('relation "groupbuying_outbox" does not exist'), False),
        (MessageSizeTooLargeError("too large"), False),
        (OverflowError("date value out of range"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_the_relay_retries_only_what_may_succeed_next_time(
    error: Exception, transient: bool
) -> None:
    assert is_transient(error) is transient


def test_kafka_pythons_shutdown_race_is_not_logged_but_other_network_errors_are() -> None:
    from infra.cli.main import _closed_while_reading

    def record(error: BaseException) -> logging.LogRecord:
        return logging.LogRecord(
            "kafka.net.transport",
            logging.ERROR,
            "",
            0,
            "Error receiving",
            (),
            (type(error), error, None),
        )

    race = AttributeError("'NoneType' object has no attribute 'recv'")
    assert not _closed_while_reading(record(race))
    assert _closed_while_reading(record(ConnectionResetError("reset by peer")))
