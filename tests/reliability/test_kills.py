"""`kill -9` of each service, again and again mid-stream: the accounting stays exact."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.settings import Settings
from tests.reliability.accounting import Figures, account
from tests.support.faults import (
    SCALE,
    SERVICES,
    Killer,
    OrderStream,
    Scale,
    Supervisor,
    kill_moments,
    open_campaigns,
    staggered_deadlines,
)

pytestmark = [pytest.mark.integration, pytest.mark.soak, pytest.mark.timeout(SCALE.test_timeout)]


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_killed_again_and_again_mid_stream_loses_nothing_and_counts_nothing_twice(
    service: str,
    settings: Settings,
    unique: str,
    scale: Scale,
    seed: int,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    rng = random.Random(seed)
    ids = [f"{service}{n}-{unique}" for n in range(scale.campaigns)]
    deadlines = staggered_deadlines(ids, scale.first_deadline, scale.last_deadline)
    open_campaigns(settings, deadlines)
    # From the first orders until the last campaign has closed and settled.
    moments = kill_moments(rng, scale.kills, 1.0, scale.last_deadline + 3.0)
    supervisor = Supervisor(settings, tmp_path)
    stream = OrderStream(settings, deadlines, scale.rate, seed)
    killer = Killer(supervisor, service, moments, rng)
    figures: Figures | None = None
    started = time.monotonic()
    try:
        with supervisor:
            stream.start()
            killer.start()
            try:
                killer.join(timeout=moments[-1] + 30)
                figures = account(settings, stream, deadlines, scale.settle_timeout)
            finally:
                killer.stop.set()
                killer.thread.join(timeout=10)  # its last restart, before the services stop
                stream.stop.set()
    finally:
        report(
            f"{killer.kills} kills of {service}; {figures or stream.progress()}; "
            f"{supervisor.summary()}; {time.monotonic() - started:.0f} s"
        )
    assert killer.kills == scale.kills
