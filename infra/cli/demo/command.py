"""`groupbuy demo`: every service, one campaign, three simulated sites, then the purchase order."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition
from rich.console import Console
from rich.live import Live

from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.cli.common import (
    EXIT_CODES,
    UNREACHABLE,
    CommandError,
    positive,
    read_models,
    require_kafka,
    require_postgres,
    require_schema,
)
from infra.cli.demo import sites as demo_sites
from infra.cli.demo import view as demo_view
from infra.cli.demo.sites import Planned, Sites
from infra.cli.demo.view import Progress
from infra.services import CONSUMER_GROUPS
from infra.settings import Settings
from projections import queries
from projections.read_models import ReadModelTables

DURATION = 50.0  # seconds from opening to deadline at --speed 1
READY_TIMEOUT = 90.0  # a first start of the broker's consumer groups can be slow
SETTLE_TIMEOUT = 60.0  # after the deadline, for the purchase order and settlements
GROUPS = CONSUMER_GROUPS["run"]
GROUPBUY = "import sys; from infra.cli.main import main; sys.exit(main(sys.argv[1:]))"
DASHBOARD_PORT = 8080


def add_command(commands: Any) -> None:
    summary = "the whole system with three simulated sites: live price, deadline, purchase order"
    demo = commands.add_parser("demo", help=summary, description=summary, epilog=EXIT_CODES)
    demo.add_argument(
        "--speed", type=positive(float), default=1.0, help="time compression (default 1: ~1 min)"
    )
    demo.add_argument(
        "--orders", type=positive(int), default=120, help="orders the sites place (default 120)"
    )
    demo.add_argument("--seed", type=int, help="seed for the simulated buyers, to repeat a run")
    demo.add_argument("--no-live", action="store_true", help="progress lines, not a live view")
    demo.add_argument(
        "--json", action="store_true", help="end with the purchase order as JSON on stdout"
    )
    demo.add_argument(
        "--port",
        type=int,
        default=DASHBOARD_PORT,
        help=f"serve the dashboard here while the demo runs (default {DASHBOARD_PORT}; 0: not)",
    )
    demo.set_defaults(run=run_demo)


def run_demo(settings: Settings, arguments: argparse.Namespace) -> int:
    console = Console(stderr=arguments.json)
    topics = Topics(settings.topic_prefix)
    campaign_id = f"demo-{uuid.uuid4().hex[:8]}"
    supplier_topic = topics.settlements(demo_sites.SUPPLIER_ID)
    require_postgres(settings)  # says which address when PostgreSQL is unreachable
    require_schema(settings)
    _prepare_topics(settings, topics, supplier_topic)
    log = Path(tempfile.gettempdir()) / f"groupbuy-{campaign_id}.log"
    console.print(f"starting every service: groupbuy run (log: {log})")
    try:
        run = _run(settings, arguments, console, campaign_id, log)
    except KeyboardInterrupt:
        console.print("interrupted: the services are stopped")
        return 130
    console.print(demo_view.purchase_order(run.purchase_order))
    console.print(demo_view.settlement_summary(run.purchase_order, run.settlements))
    if arguments.json:
        print(json.dumps({"purchase_order": run.purchase_order, "settlements": run.settlements}))
    return 0


def _run(
    settings: Settings,
    arguments: argparse.Namespace,
    console: Console,
    campaign_id: str,
    log: Path,
) -> DemoRun:
    topics = Topics(settings.topic_prefix)
    with running_services(settings, log) as services, dashboard(settings, log, arguments, console):
        services.wait_ready(settings)
        tails = Tails.at_end(settings, topics, topics.settlements(demo_sites.SUPPLIER_ID))
        try:
            run = DemoRun.open(settings, campaign_id, arguments)
            each = topics.site_orders("<site>")
            console.print(f"opened {campaign_id}; each site publishing to {each}")
            run.watch(settings, tails, services, console, live=_live(console, arguments))
        finally:
            tails.close()
    return run


@dataclass
class DemoRun:
    """One campaign from opening to settlement, and what the topics said about it."""

    progress: Progress
    planned: list[Planned]
    sites: Sites
    speed: float
    answered: set[tuple[bool, str]] = field(default_factory=set)  # (cancellation?, order_id)
    accepted: set[str] = field(default_factory=set)
    withdrawn: set[str] = field(default_factory=set)
    settled: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: dict[str, Any] | None = None

    @classmethod
    def open(cls, settings: Settings, campaign_id: str, arguments: argparse.Namespace) -> DemoRun:
        duration = DURATION / arguments.speed
        now = datetime.now(UTC)
        definition = demo_sites.definition(
            campaign_id, arguments.orders, now + timedelta(seconds=duration)
        )
        app = open_app(settings)
        try:
            app.open_campaign(definition, now)
        finally:
            app.close()
        planned = demo_sites.plan(campaign_id, arguments.orders, random.Random(arguments.seed))
        producer = kafka_clients.producer(settings)
        topic = Topics(settings.topic_prefix).site_orders
        sites = Sites(producer, topic, planned, time.monotonic(), duration)
        fields = definition.to_json_dict()
        progress = Progress(
            campaign_id, definition.currency, fields["pricing"]["tiers"], definition.deadline
        )
        progress.sent = sites.sent
        return cls(progress, planned, sites, arguments.speed)

    @property
    def purchase_order(self) -> dict[str, Any]:
        assert self.order is not None, "the demo has not finished"
        return self.order

    @property
    def settlements(self) -> list[dict[str, Any]]:
        return sorted(self.settled.values(), key=lambda s: (s["site_id"], s["order_id"]))

    def watch(
        self,
        settings: Settings,
        tails: Tails,
        services: ServicesProcess,
        console: Console,
        live: bool,
    ) -> None:
        """Follow the campaign until its purchase order and every settlement are in."""
        self.sites.start()
        conn = read_models(settings)
        tables = ReadModelTables(settings.database_schema)
        every = max(1.0, 5.0 / self.speed)
        printed, last_line = 0.0, ""
        view = Live(console=console, refresh_per_second=4) if live else contextlib.nullcontext()
        try:
            with view:
                while not self._finished():
                    services.check()
                    self._check_time()
                    self._absorb(tails)
                    self.progress.view = _campaign_view(conn, tables, self.progress.campaign_id)
                    now = datetime.now(UTC)
                    self.progress.stage = self._stage(now)
                    if isinstance(view, Live):
                        view.update(demo_view.live(self.progress, now))
                    elif time.monotonic() - printed >= every:
                        line = demo_view.plain_line(self.progress, now)
                        if line != last_line:  # a quiet wait for settle prints nothing more
                            console.print(line, highlight=False, soft_wrap=True)
                        printed, last_line = time.monotonic(), line
                    time.sleep(0.2)
        finally:
            self.sites.stop.set()
            self.sites.producer.close()
            conn.close()

    def _absorb(self, tails: Tails) -> None:
        campaign_id = self.progress.campaign_id
        for message in tails.results():
            if message.get("campaign_id") not in (campaign_id, f"{campaign_id}-gone"):
                continue
            kind = message["type"]
            answer = (kind in ("order.cancelled", "cancellation.rejected"), message["order_id"])
            if answer in self.answered:
                continue  # a redelivered result
            self.answered.add(answer)
            reason = message.get("reason")
            self.progress.results[f"{kind}: {reason}" if reason else kind] += 1
            if kind == "order.accepted":
                self.accepted.add(message["order_id"])
            elif kind == "order.cancelled":
                self.withdrawn.add(message["order_id"])
        self.progress.dead_letters += tails.dead_letters(campaign_id.encode())
        for message in tails.settlements():
            if message.get("campaign_id") == campaign_id:
                self.settled[message["order_id"]] = message
        for message in tails.supplier():
            if message.get("campaign_id") == campaign_id:
                self.order = message

    def _finished(self) -> bool:
        """Every message answered, the supplier told, and each standing commitment settled."""
        if not self.sites.done.is_set() or self.order is None:
            return False
        return self._missing() == "nothing"

    def _stage(self, now: datetime) -> str:
        if not self.sites.done.is_set():
            return "sites selling"
        if now < self.progress.deadline:
            return "sites done; waiting for the deadline"
        if self.order is None:
            return "deadline: the clock closes once ingestion caught up, settle sends the order"
        return "purchase order sent; collecting buyer settlements"

    def _check_time(self) -> None:
        if self.sites.error is not None:
            raise CommandError(
                f"the simulated sites could not publish: {self.sites.error!r}",
                exit_code=UNREACHABLE,
            )
        late = (datetime.now(UTC) - self.progress.deadline).total_seconds()
        if late > SETTLE_TIMEOUT:
            raise CommandError(
                f"{SETTLE_TIMEOUT:.0f} s after the deadline, still missing: {self._missing()} "
                "(are the services running? see their log above)",
                exit_code=UNREACHABLE,
            )

    def _missing(self) -> str:
        malformed = sum(demo_sites.malformed(p) for p in self.planned)
        standing = self.accepted - self.withdrawn
        missing = {
            "the purchase order": self.order is None,
            f"{len(self.planned) - malformed - len(self.answered)} order results": len(
                self.answered
            )
            < len(self.planned) - malformed,
            f"{malformed - self.progress.dead_letters} dead letters": self.progress.dead_letters
            < malformed,
            f"{len(standing - set(self.settled))} buyer settlements": bool(
                standing - set(self.settled)
            ),
            f"{len(set(self.settled) - standing)} unexpected buyer settlements": bool(
                set(self.settled) - standing
            ),
        }
        return ", ".join(what for what, yes in missing.items() if yes) or "nothing"


def _campaign_view(
    conn: psycopg.Connection[Any], tables: ReadModelTables, campaign_id: str
) -> dict[str, Any] | None:
    try:
        return queries.campaign(conn, tables, campaign_id)
    except psycopg.errors.UndefinedTable:
        return None  # the projector has not created its tables yet


def _live(console: Console, arguments: argparse.Namespace) -> bool:
    return console.is_terminal and not arguments.no_live and not arguments.json


class Tails:
    """The topics the demo reads, from where they ended before it published anything."""

    def __init__(self, consumer: KafkaConsumer, topics: Topics, supplier_topic: str) -> None:
        self.consumer = consumer
        self.topics = topics
        self.supplier_topic = supplier_topic
        self.polled: dict[str, list[Any]] = {}

    @classmethod
    def at_end(cls, settings: Settings, topics: Topics, supplier_topic: str) -> Tails:
        # settle and the relay write in Kafka transactions: the reader sees what they
        # committed, once.
        consumer = kafka_clients.reader(settings)
        names = [
            *map(topics.site_results, demo_sites.SITES),
            topics.orders_dlq,
            *map(topics.site_buyer_settlements, demo_sites.SITES),
            supplier_topic,
        ]
        partitions = [
            TopicPartition(name, p)
            for name in names
            for p in sorted(consumer.partitions_for_topic(name) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_end()
        for partition in partitions:
            consumer.position(partition)  # resolve "the end" now, before anything is sent
        return cls(consumer, topics, supplier_topic)

    def _take(self, *names: str) -> list[Any]:
        for tp, records in self.consumer.poll(timeout_ms=50, max_records=5000).items():
            self.polled.setdefault(tp.topic, []).extend(records)
        return [record for name in names for record in self.polled.pop(name, [])]

    def results(self) -> list[dict[str, Any]]:
        names = map(self.topics.site_results, demo_sites.SITES)
        return [json.loads(r.value) for r in self._take(*names)]

    def dead_letters(self, key: bytes) -> int:
        return sum(r.key == key for r in self._take(self.topics.orders_dlq))

    def settlements(self) -> list[dict[str, Any]]:
        names = map(self.topics.site_buyer_settlements, demo_sites.SITES)
        return [json.loads(r.value) for r in self._take(*names)]

    def supplier(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self._take(self.supplier_topic)]

    def close(self) -> None:
        self.consumer.close()


def _prepare_topics(settings: Settings, topics: Topics, supplier_topic: str) -> None:
    """Create the topics the demo writes and reads, so its readers see them from the start:
    each demo site's, as `groupbuy site add` would, and groupbuy's own."""
    require_kafka(settings)
    sites = [name for site in demo_sites.SITES for name in topics.site_topics(site)]
    names = [*sites, topics.orders_dlq, topics.campaign_events]
    kafka_clients.ensure_topics(settings, [*names, supplier_topic])
    try:
        # A new broker's first minute: its consumer groups have no coordinator yet, and
        # waiting for the services to join them would fail at once.
        kafka_clients.wait_for_coordinator(settings, *GROUPS)
    except kafka_clients.CoordinatorNotFoundError as error:
        raise CommandError(str(error), UNREACHABLE) from None


class ServicesProcess:
    """`groupbuy run` (or other `command`) as a child process, its output in a log file."""

    def __init__(self, settings: Settings, log: Path, command: tuple[str, ...] = ("run",)) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", GROUPBUY, *command],
                env=os.environ | settings.as_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
            raise CommandError(
                f"the services (groupbuy run) stopped with exit code {code}; "
                f"the end of {self.log}:\n{tail}",
                exit_code=UNREACHABLE,
            )

    def wait_ready(self, settings: Settings) -> None:
        """Until ingest, project and settle have joined their Kafka consumer groups."""
        groups = [kafka_clients.group_id(settings, group) for group in GROUPS]
        admin = kafka_clients.admin(settings)
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while not _stable(admin, groups):
                self.check()
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"the services did not join their Kafka consumer groups at "
                        f"{settings.kafka_bootstrap} within {READY_TIMEOUT:.0f} s: "
                        f"see {self.log}",
                        exit_code=UNREACHABLE,
                    )
                time.sleep(0.5)
        finally:
            admin.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _stable(admin: Any, groups: list[str]) -> bool:
    described = admin.describe_groups(groups)
    return all(
        described.get(g, {}).get("group_state") == "Stable" and described[g]["members"]
        for g in groups
    )


@contextlib.contextmanager
def dashboard(
    settings: Settings, log: Path, arguments: argparse.Namespace, console: Console
) -> Iterator[None]:
    """`groupbuy serve` while the demo runs, its address printed; nothing if the http extra
    is missing or --port is 0. A dashboard that cannot start does not stop the demo."""
    if arguments.port == 0:
        yield
        return
    if importlib.util.find_spec("uvicorn") is None:
        console.print("no dashboard: groupbuy serve needs pip install 'groupbuy[http]'")
        yield
        return
    server = ServicesProcess(settings, log, ("serve", "--port", str(arguments.port)))
    address = f"http://127.0.0.1:{arguments.port}/"
    try:
        if _answers(address, server):
            console.print(f"dashboard: {address} (live while the demo runs)")
        else:
            console.print(f"no dashboard: groupbuy serve did not answer at {address}; see {log}")
        yield
    finally:
        server.stop()


def _answers(address: str, server: ServicesProcess, timeout: float = 20.0) -> bool:
    """Whether `server` answers its /healthz within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            with urllib.request.urlopen(address + "healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            time.sleep(0.2)
    return False


@contextlib.contextmanager
def running_services(settings: Settings, log: Path) -> Iterator[ServicesProcess]:
    """The services for as long as the demo runs, stopped cleanly however it ends."""
    services = ServicesProcess(settings, log)
    try:
        yield services
    finally:
        services.stop()
