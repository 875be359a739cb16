"""`groupbuy run` runs every service in one process and stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

from infra.adapters.app import open_app
from infra.settings import Settings
from tests.support.builders import campaign, placed
from tests.support.kafka_io import (
    make_site_topics,
    publish_orders,
    read_json,
    results_topics,
    wait_for,
)
from tests.support.pipeline import ServiceProcess
from tests.support.read_models import projected_version


def test_run_takes_an_order_to_the_read_model_and_stops_on_sigterm(
    settings: Settings, unique: str, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    campaign_id = f"run-{unique}"
    app = open_app(settings)
    app.open_campaign(campaign(campaign_id), datetime.now(UTC))
    app.close()
    make_site_topics(settings)
    run = ServiceProcess("run", settings, tmp_path / "run.log")
    processes.append(run)

    publish_orders(settings, [placed(campaign_id, 1)])
    (result,) = read_json(settings, results_topics(settings), 1)
    wait_for(lambda: projected_version(settings) == 2, what="the order in the read model")
    run.process.send_signal(signal.SIGTERM)

    assert result["type"] == "order.accepted"
    assert run.process.wait(timeout=60) == 0
