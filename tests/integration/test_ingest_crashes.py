"""`kill -9` of ingest processes loses no accepted order and counts none twice."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from domain.campaign import Campaign
from infra.adapters.app import open_app
from infra.services.relay import run_relay
from infra.settings import Settings
from tests.support.builders import campaign, placed
from tests.support.kafka_io import (
    make_site_topics,
    publish_orders,
    read_json,
    read_until,
    results_topics,
    wait_for,
)
from tests.support.pipeline import ServiceProcess, alive, running

ORDERS = 4000
CAMPAIGNS = 5


@pytest.fixture
def campaign_ids(settings: Settings, unique: str) -> list[str]:
    ids = [f"crash{n}-{unique}" for n in range(CAMPAIGNS)]
    app = open_app(settings)
    for campaign_id in ids:
        # No per-buyer limit and no stock cap: every order must end up accepted.
        app.open_campaign(campaign(campaign_id, max_per_buyer=None), datetime.now(UTC))
    app.close()
    make_site_topics(settings)
    return ids


@pytest.fixture
def orders(campaign_ids: list[str]) -> list[dict[str, Any]]:
    return [placed(campaign_ids[n % CAMPAIGNS], n, quantity=1 + n % 3) for n in range(ORDERS)]


@pytest.fixture
def relay(settings: Settings) -> Iterator[None]:
    """Publishes the results: from the events the ingest processes store, and their outbox."""
    with running(run_relay, settings):
        yield


@dataclass(frozen=True)
class Stream:
    """A stream of orders for the open campaigns, with a relay publishing their results."""

    settings: Settings
    campaign_ids: list[str]
    orders: list[dict[str, Any]]

    def trickle(self) -> threading.Thread:
        """Publish in small chunks, so that crashes land in the middle of the stream."""

        def trickle() -> None:
            for start in range(0, len(self.orders), 100):
                publish_orders(self.settings, self.orders[start : start + 100])

        thread = threading.Thread(target=trickle)
        thread.start()
        return thread

    def wait_for_a_quarter(self) -> None:
        wait_for(lambda: self.result_count() >= ORDERS // 4, what="a quarter of the results")

    def result_count(self) -> int:
        topics = results_topics(self.settings)
        return len(read_until(self.settings, topics, lambda _: False, 0.5))

    def assert_each_order_stored_once(self) -> None:
        settings, orders = self.settings, self.orders
        results = read_json(settings, results_topics(settings), len(orders), 120)
        # Results are at least once: a crash may repeat one, never change it or lose it.
        assert {r["order_id"] for r in results} == {o["order_id"] for o in orders}
        assert {r["type"] for r in results} == {"order.accepted"}
        reader = open_app(settings)
        placements: Counter[str] = Counter()
        committed = 0
        for campaign_id in self.campaign_ids:
            for event in reader.events.get(Campaign.create_id(campaign_id)):
                if isinstance(event, Campaign.CommitmentPlaced):
                    placements[event.order_id] += 1
            committed += reader.get_campaign(campaign_id).committed_quantity
        reader.close()
        assert placements == Counter({o["order_id"]: 1 for o in orders})
        assert committed == sum(o["quantity"] for o in orders)


@pytest.fixture
def stream(
    settings: Settings, campaign_ids: list[str], orders: list[dict[str, Any]], relay: None
) -> Stream:
    return Stream(settings, campaign_ids, orders)


def test_ingest_killed_mid_stream_and_restarted_loses_nothing_and_counts_nothing_twice(
    stream: Stream, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    settings = stream.settings
    processes.append(ServiceProcess("ingest", settings, tmp_path / "ingest-1.log"))
    publishing = stream.trickle()
    stream.wait_for_a_quarter()
    processes[0].kill()
    processes.append(ServiceProcess("ingest", settings, tmp_path / "ingest-2.log"))
    publishing.join()

    stream.assert_each_order_stored_once()


def test_two_ingest_processes_share_the_work_and_survive_one_being_killed(
    stream: Stream, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    settings = stream.settings
    processes.append(ServiceProcess("ingest", settings, tmp_path / "ingest-a.log"))
    processes.append(ServiceProcess("ingest", settings, tmp_path / "ingest-b.log"))
    publishing = stream.trickle()
    stream.wait_for_a_quarter()
    processes[0].kill()
    publishing.join()

    stream.assert_each_order_stored_once()


def test_ingest_with_workers_shares_partitions_with_another_and_survives_being_killed(
    stream: Stream, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    settings = stream.settings
    for name in ("a", "b"):
        log = tmp_path / f"ingest-{name}.log"
        processes.append(ServiceProcess("ingest", settings, log, "--workers", "2"))
    publishing = stream.trickle()
    wait_for(lambda: len(processes[0].children()) == 2, what="the two workers of ingest a")
    stream.wait_for_a_quarter()
    workers = processes[0].children()
    processes[0].kill()  # its workers lose their coordinator in the middle of the stream
    wait_for(lambda: not any(map(alive, workers)), timeout=30, what="ingest a's workers to stop")
    publishing.join()

    stream.assert_each_order_stored_once()
    shared = (tmp_path / "ingest-b.log").read_text()  # b's two workers both had partitions
    assert re.search(r"ingest-worker-0: \S+:\d", shared)
    assert re.search(r"ingest-worker-1: \S+:\d", shared)


def test_a_worker_that_dies_stops_its_ingest_and_a_restart_loses_nothing(
    stream: Stream, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    settings = stream.settings
    log = tmp_path / "ingest-1.log"
    processes.append(ServiceProcess("ingest", settings, log, "--workers", "2"))
    publishing = stream.trickle()
    stream.wait_for_a_quarter()
    dying, other = processes[0].children()
    os.kill(dying, signal.SIGKILL)

    assert processes[0].process.wait(timeout=60) == 1
    assert re.search(r"WorkerDiedError: ingest-worker-\d exited \(code -9\)", log.read_text())
    wait_for(lambda: not alive(other), timeout=30, what="the other worker to stop")
    processes.append(
        ServiceProcess("ingest", settings, tmp_path / "ingest-2.log", "--workers", "2")
    )
    publishing.join()

    stream.assert_each_order_stored_once()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ingest_with_workers_stops_cleanly_when_every_process_is_signalled(
    settings: Settings,
    campaign_ids: list[str],
    processes: list[ServiceProcess],
    tmp_path: Path,
    stop: signal.Signals,
) -> None:
    # As a terminal's Ctrl-C signals its foreground group, and a service manager every
    # process of a service; the workers first, the harder order.
    log = tmp_path / "ingest.log"
    ingest = ServiceProcess("ingest", settings, log, "--workers", "2")
    processes.append(ingest)
    wait_for(lambda: "ingest-worker-1: " in log.read_text(), what="the partitions shared out")
    workers = ingest.children()

    for pid in [*workers, ingest.process.pid]:
        os.kill(pid, stop)

    assert ingest.process.wait(timeout=60) == 0
    assert not any(map(alive, workers))
    assert "Traceback" not in log.read_text()
