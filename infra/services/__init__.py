"""The long-running `groupbuy` services, one module each, and the registry `groupbuy run` uses."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from infra.services.clock import run_clock
from infra.services.ingest import run_ingest
from infra.services.project import run_project
from infra.services.relay import run_relay
from infra.services.settle import run_settle
from infra.services.supervision import run_together
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
    """Every service on a thread of its own, all stopped by the same signal. One that stops
    on its own stops the others, and this raises ServiceStoppedError naming it."""
    run_together(
        {name: partial(service, settings) for name, (service, _) in SERVICES.items()}, stop
    )


SERVICES_AND_RUN = {
    **SERVICES,
    "run": (run_all, "run every service (ingest, relay, project, clock, settle) until stopped"),
}
# The Kafka consumer groups each command's services join (under GROUPBUY_TOPIC_PREFIX).
CONSUMER_GROUPS = {
    "ingest": ["groupbuy-ingest"],
    "project": ["groupbuy-project"],
    "settle": ["groupbuy-settle"],
    "run": ["groupbuy-ingest", "groupbuy-project", "groupbuy-settle"],
}
