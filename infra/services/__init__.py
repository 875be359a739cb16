"""The long-running `groupbuy` services, one module each, and the registry `groupbuy run` uses."""

from __future__ import annotations

import threading
from collections.abc import Callable

from infra.services.clock import run_clock
from infra.services.ingest import run_ingest
from infra.services.project import run_project
from infra.services.relay import run_relay
from infra.services.settle import run_settle
from infra.settings import Settings

Service = Callable[[Settings, threading.Event], None]
SERVICES: dict[str, tuple[Service, str]] = {
    "ingest": (run_ingest, "apply orders from Kafka to campaigns, exactly once"),
    "relay": (run_relay, "publish campaign events, order results and dead letters to Kafka"),
    "project": (run_project, "keep the read models (live price, history, commitments) current"),
    "clock": (run_clock, "close campaigns at their deadlines, once their orders are all in"),
    "settle": (run_settle, "send purchase orders and buyer settlements when campaigns close"),
}


def run_all(settings: Settings, stop: threading.Event) -> None:
    """Every service on a thread of its own, all stopped by the same signal."""
    threads = [
        threading.Thread(target=service, args=(settings, stop), name=name)
        for name, (service, _) in SERVICES.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


SERVICES_AND_RUN = {
    **SERVICES,
    "run": (run_all, "run every service (ingest, relay, project, clock, settle) until stopped"),
}
