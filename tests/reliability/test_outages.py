"""The broker or the database lost mid-stream (private ones): the accounting stays exact."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from infra.settings import Settings
from tests.reliability.accounting import Figures, account
from tests.support.faults import (
    SCALE,
    Exit,
    OrderStream,
    PrivateServices,
    Scale,
    Supervisor,
    open_campaigns,
    staggered_deadlines,
)
from tests.support.kafka_io import until
from tests.support.read_models import projected_version

pytestmark = [pytest.mark.integration, pytest.mark.soak, pytest.mark.timeout(SCALE.test_timeout)]
KAFKA_START = 20.0  # seconds the launcher takes to start the broker again, about
Fault = Callable[[], str]  # injects itself, and says what it did


def broker_outage(private: PrivateServices, seconds: float) -> str:
    with timed() as stopping:
        private.stop_kafka()  # SIGTERM: the broker shuts down in order
    try:
        time.sleep(seconds)  # the outage itself: nothing to wait for
    finally:
        with timed() as starting:
            private.start_kafka()
    return f"broker stopped in {stopping[0]:.0f} s, down {seconds:.0f} s, up in {starting[0]:.0f} s"


def database_outage(private: PrivateServices, seconds: float) -> str:
    private.stop_postgres()  # pg_ctl stop -m fast: sessions are cut, new ones refused
    try:
        time.sleep(seconds)
    finally:
        private.start_postgres()
    return f"database stopped for {seconds:.0f} s"


def database_freeze(private: PrivateServices, seconds: float) -> str:
    with private.postgres_frozen() as frozen:  # connections hang: neither answered nor refused
        time.sleep(seconds)
    return f"{len(frozen)} database processes frozen for {seconds:.0f} s"


@contextmanager
def timed() -> Iterator[list[float]]:
    took = [0.0]
    started = time.monotonic()
    yield took
    took[0] = time.monotonic() - started


def run_through(
    fault: Fault,
    fault_length: float,
    settings: Settings,
    unique: str,
    scale: Scale,
    seed: int,
    logs: Path,
    report: Callable[[str], None],
) -> list[Exit]:
    """Stream orders, inject the fault once they flow through every service, then account
    for everything; the supervisor restarts any service that exits and reports which did.
    Returns those exits."""
    ids = [f"out{n}-{unique}" for n in range(scale.campaigns)]
    # The fault comes about 6 s in; the campaigns close some seconds after it ends.
    first = 6 + fault_length + scale.after_outage
    deadlines = staggered_deadlines(ids, first, first + scale.last_deadline - scale.first_deadline)
    open_campaigns(settings, deadlines)
    supervisor = Supervisor(settings, logs)
    stream = OrderStream(settings, deadlines, scale.rate, seed)
    started, what = time.monotonic(), "no fault injected"
    figures: Figures | None = None
    try:
        with supervisor:
            stream.start()
            try:
                flowing = until(lambda: projected_version(settings) > 2 * scale.rate, 60)
                assert flowing, f"no orders reached the read models: {supervisor.summary()}"
                what = fault()
                figures = account(settings, stream, deadlines, scale.settle_timeout)
            finally:
                stream.stop.set()
    finally:
        report(
            f"{what}; {figures or stream.progress()}; {supervisor.summary()}; "
            f"{time.monotonic() - started:.0f} s"
        )
    return supervisor.exits


def test_the_broker_stopped_and_started_again_mid_stream_loses_nothing(
    private_services: PrivateServices,
    private_settings: Settings,
    unique: str,
    scale: Scale,
    seed: int,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    fault = partial(broker_outage, private_services, scale.outage)
    length = scale.outage + KAFKA_START
    run_through(fault, length, private_settings, unique, scale, seed, tmp_path, report)


def test_the_database_stopped_and_started_again_mid_stream_loses_nothing(
    private_services: PrivateServices,
    private_settings: Settings,
    unique: str,
    scale: Scale,
    seed: int,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    fault = partial(database_outage, private_services, scale.outage)
    run_through(fault, scale.outage, private_settings, unique, scale, seed, tmp_path, report)


def test_the_database_unreachable_mid_stream_loses_nothing(
    private_services: PrivateServices,
    private_settings: Settings,
    unique: str,
    scale: Scale,
    seed: int,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    fault = partial(database_freeze, private_services, scale.freeze)
    run_through(fault, scale.freeze, private_settings, unique, scale, seed, tmp_path, report)
