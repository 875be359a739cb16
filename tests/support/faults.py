"""Fault injection: private services, a supervisor that restarts, a killer, an order stream."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.local.common import LOOPBACK
from infra.local.kafka import LocalKafka
from infra.local.kafka_cluster import LocalKafkaCluster
from infra.local.postgres import LocalPostgres
from infra.settings import Settings
from tests.support.builders import SITES, campaign
from tests.support.kafka_io import make_site_topics, site_client
from tests.support.pipeline import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "relay", "project", "clock", "settle")
SOAK = os.environ.get("GROUPBUY_SOAK") == "1"


@dataclass(frozen=True)
class Scale:
    """How big a fault-injection run is."""

    kills: int  # SIGKILLs of the chosen service
    campaigns: int
    rate: float  # order messages a second
    first_deadline: float  # seconds of stream before the first campaign closes
    last_deadline: float
    outage: float  # seconds the broker or the database stays stopped
    freeze: float  # seconds the database's processes stay SIGSTOPped
    after_outage: float  # seconds of stream after an outage before the first deadline
    settle_timeout: float  # to close, settle and project everything after the stream
    test_timeout: float
    leader_rounds: int  # kills of the busiest partition leader, then the controller leader
    node_down: float  # seconds a killed Kafka node stays dead


# `make test`: a few hundred orders, three kills, a 10 s freeze; about 20 to 60 s a test.
SHORT = Scale(
    kills=3,
    campaigns=4,
    rate=25,
    first_deadline=8,
    last_deadline=12,
    outage=4,
    freeze=10,
    after_outage=4,
    settle_timeout=90,
    test_timeout=240,
    leader_rounds=1,
    node_down=3,
)
# `make soak` (GROUPBUY_SOAK=1): thousands of orders, twenty kills, a minute's freeze.
LONG = Scale(
    kills=20,
    campaigns=8,
    rate=30,
    first_deadline=100,
    last_deadline=150,
    outage=15,
    freeze=60,
    after_outage=60,
    settle_timeout=240,
    test_timeout=900,
    leader_rounds=5,
    node_down=10,
)
SCALE = LONG if SOAK else SHORT


# --- Private Kafka and PostgreSQL, to be stopped, restarted and frozen ---------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (a cluster's nodes listen on a run)."""
    rng = random.Random()
    while True:
        first = rng.randrange(30_000, 60_000)
        if all(bindable(port) for port in range(first, first + count)):
            return first


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


@dataclass
class PrivateServices:
    """A Kafka broker and a PostgreSQL cluster of our own, started with infra/local's launcher.

    The shared ones serve other test runs: faults go to these only.
    """

    state: Path
    kafka_nodes: int = 1  # above 1, a cluster (LocalKafkaCluster) of that many
    kafka_port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=lambda: free_ports(3))
    cluster_controller_port: int = field(default_factory=lambda: free_ports(3))
    pg_port: int = field(default_factory=free_port)
    kafka_bootstrap: str = ""
    database_url: str = ""

    @classmethod
    def create(cls, kafka_nodes: int = 1) -> PrivateServices:
        # Under /tmp, not pytest's 0700 folders: the postgres user must reach its data folder.
        state = Path(tempfile.mkdtemp(prefix="groupbuy-faults-", dir="/tmp"))
        state.chmod(0o755)
        return cls(state, kafka_nodes)

    @property
    def kafka(self) -> LocalKafka | LocalKafkaCluster:
        if self.kafka_nodes > 1:
            return self.cluster
        return LocalKafka(self.kafka_port, self.controller_port, self.state / "kafka")

    @property
    def cluster(self) -> LocalKafkaCluster:
        return LocalKafkaCluster.at(
            self.state / "kafka-cluster",
            self.cluster_port,
            self.cluster_controller_port,
            self.kafka_nodes,
        )

    @property
    def postgres(self) -> LocalPostgres:
        return LocalPostgres(self.pg_port, self.state / "postgres")

    def start(self) -> None:
        exports = self._launch()
        self.kafka_bootstrap = exports["GROUPBUY_KAFKA_BOOTSTRAP"]
        self.database_url = exports["GROUPBUY_DATABASE_URL"]

    def start_kafka(self) -> None:
        # A set database URL tells the launcher to start Kafka alone.
        self._launch(GROUPBUY_DATABASE_URL=self.database_url)

    def stop_kafka(self) -> None:
        assert self.kafka.stop(), "the private Kafka was not running"

    def start_postgres(self) -> None:
        self._launch(GROUPBUY_KAFKA_BOOTSTRAP=self.kafka_bootstrap)

    def stop_postgres(self) -> None:
        assert self.postgres.stop(), "the private PostgreSQL was not running"  # pg_ctl -m fast

    @contextmanager
    def postgres_frozen(self) -> Iterator[list[int]]:
        """Every process of the cluster stopped (SIGSTOP) inside: connections hang, none is
        refused, as when the database's machine stops answering."""
        postmaster = int((self.postgres.data / "postmaster.pid").read_text().split()[0])
        # The postmaster first, so that it forks no new backend once its children are listed.
        os.kill(postmaster, signal.SIGSTOP)
        frozen = [postmaster, *descendants(postmaster)]
        for pid in frozen[1:]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            yield frozen
        finally:
            for pid in reversed(frozen):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def down(self) -> None:
        try:
            self.kafka.stop()
            self.postgres.stop()
        finally:
            shutil.rmtree(self.state, ignore_errors=True)

    def _launch(self, **env: str) -> dict[str, str]:
        exports = {}
        for line in self.launcher("up", **env).splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            exports[name] = value.strip("'")
        return exports

    def launcher(self, command: str, **env: str) -> str:
        """Run `python -m infra.local COMMAND` on these services; its stdout, or its stderr
        for `status` and `down`, which print there."""
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in ("GROUPBUY_KAFKA_BOOTSTRAP", "GROUPBUY_DATABASE_URL")
        } | {
            "GROUPBUY_STATE_DIR": str(self.state),
            "GROUPBUY_KAFKA_PORT": str(self.kafka_port),
            "GROUPBUY_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "GROUPBUY_PG_PORT": str(self.pg_port),
            "GROUPBUY_KAFKA_HEAP": "384m",
            "GROUPBUY_KAFKA_NODES": str(self.kafka_nodes),
            "GROUPBUY_KAFKA_CLUSTER_PORT": str(self.cluster_port),
            "GROUPBUY_KAFKA_CLUSTER_CONTROLLER_PORT": str(self.cluster_controller_port),
            "GROUPBUY_KAFKA_NODE_HEAP": "384m",
            **env,
        }
        done = subprocess.run(
            [sys.executable, "-m", "infra.local", command],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"infra.local {command} failed: {done.stderr.strip()}"
        return done.stdout if command == "up" else done.stderr


def descendants(pid: int) -> list[int]:
    """The process ids under `pid`, children before grandchildren."""
    found: list[int] = []
    parents = [pid]
    while parents:
        parent = parents.pop()
        children_file = Path(f"/proc/{parent}/task/{parent}/children")
        with suppress(FileNotFoundError):
            children = [int(child) for child in children_file.read_text().split()]
            found += children
            parents += children
    return found


# --- The services as child processes, restarted when they exit ------------------------------


@dataclass(frozen=True)
class Exit:
    """A service that exited by itself (not killed by the test), and was restarted."""

    service: str
    code: int
    seconds: float  # after the supervisor started
    last_line: str


class Supervisor:
    """The five services as child processes; any that exits by itself is restarted after a
    pause and counted, as a service manager would."""

    def __init__(self, settings: Settings, logs: Path, pause: float = 1.0) -> None:
        self.settings = settings
        self.logs = logs
        self.pause = pause
        self.processes: dict[str, ServiceProcess] = {}
        self.held: set[str] = set()  # killed by the test, which restarts them itself
        self.due: dict[str, float] = {}  # exited: restart at this monotonic time
        self.exits: list[Exit] = []
        self.not_stopped: list[str] = []  # services SIGTERM did not stop in 60 s
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def __enter__(self) -> Supervisor:
        for name in SERVICES:
            self.processes[name] = self._spawn(name)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        with self.lock:
            running = [p for p in self.processes.values() if p.process.poll() is None]
            for process in running:
                process.process.send_signal(signal.SIGTERM)
            for name, process in self.processes.items():
                try:
                    process.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.not_stopped.append(name)
                    process.kill()

    def kill(self, name: str) -> None:
        """SIGKILL, like a crashing machine; the caller restarts it."""
        with self.lock:
            self.held.add(name)
            self.due.pop(name, None)
            self.processes[name].kill()

    def restart(self, name: str) -> None:
        with self.lock:
            self.processes[name] = self._spawn(name)
            self.held.discard(name)
            self.due.pop(name, None)

    def summary(self) -> str:
        """Which services exited by themselves, how often, and the first reason they gave."""
        first: dict[tuple[str, int], Exit] = {}
        for exit in self.exits:
            first.setdefault((exit.service, exit.code), exit)
        codes = Counter((e.service, e.code) for e in self.exits)
        said = [
            f"{service} exited {n}x (code {code}: {first[(service, code)].last_line[:120]})"
            for (service, code), n in sorted(codes.items())
        ]
        if self.not_stopped:
            said.append(f"SIGTERM did not stop {', '.join(self.not_stopped)} within 60 s")
        return "; ".join(said) or "no service exited by itself"

    def _spawn(self, name: str) -> ServiceProcess:
        return ServiceProcess(name, self.settings, self.logs / f"{name}.log")

    def _watch(self) -> None:
        while not self.stopping.wait(0.2):
            with self.lock:
                for name, process in self.processes.items():
                    self._look_after(name, process)

    def _look_after(self, name: str, process: ServiceProcess) -> None:
        now = time.monotonic()
        if name in self.held:
            return
        if name in self.due:
            if now >= self.due[name]:
                del self.due[name]
                self.processes[name] = self._spawn(name)
            return
        code = process.process.poll()
        if code is not None:
            last = last_line(process.log)
            self.exits.append(Exit(name, code, now - self.started, last))
            self.due[name] = now + self.pause


def last_line(log: Path) -> str:
    """The last line of a service's log that says something (its error, usually)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(empty log)"


class Killer:
    """SIGKILLs one service at given moments and restarts it after a short random pause."""

    def __init__(
        self, supervisor: Supervisor, service: str, moments: list[float], rng: random.Random
    ) -> None:
        self.supervisor = supervisor
        self.service = service
        self.moments = moments  # seconds after `start`
        self.rng = rng
        self.kills = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"killer-{service}", daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the killer of {self.service} did not finish"

    def _run(self) -> None:
        for moment in self.moments:
            if self.stop.wait(max(0.0, self.started + moment - time.monotonic())):
                return
            self.supervisor.kill(self.service)
            self.kills += 1
            self.stop.wait(self.rng.uniform(0.2, 1.5))
            self.supervisor.restart(self.service)


def kill_moments(rng: random.Random, count: int, start: float, end: float) -> list[float]:
    """`count` random moments between `start` and `end`, at least 2 s apart (one restart)."""
    moments = sorted(rng.uniform(start, end) for _ in range(count))
    for n in range(1, count):
        moments[n] = max(moments[n], moments[n - 1] + 2.0)
    return moments


# --- Campaigns and the stream of orders -----------------------------------------------------


def open_campaigns(
    settings: Settings, deadlines: dict[str, datetime], sites: Iterable[str] = SITES
) -> None:
    """Open campaigns with no per-buyer limit and no stock cap (every timely order counts),
    and make the topics of the sites that will order (before ingest starts: it notices a new
    site's orders topic only at its next metadata refresh)."""
    app = open_app(settings)
    try:
        for campaign_id, deadline in deadlines.items():
            definition = campaign(
                campaign_id,
                max_per_buyer=None,
                minimum_quantity=1,
                deadline=deadline.isoformat().replace("+00:00", "Z"),
            )
            app.open_campaign(definition, datetime.now(UTC))
    finally:
        app.close()
    make_site_topics(settings, sites)


def staggered_deadlines(ids: list[str], first: float, last: float) -> dict[str, datetime]:
    """Deadlines on whole seconds (the store keeps microseconds, Kafka milliseconds), spread
    from `first` to `last` seconds ahead, so that closes and settlements overlap the faults."""
    now = datetime.now(UTC).replace(microsecond=0)
    step = (last - first) / max(1, len(ids) - 1)
    return {c: now + timedelta(seconds=round(first + n * step)) for n, c in enumerate(ids)}


MARGIN = 1.0  # seconds before its deadline after which a campaign gets no more messages


class OrderStream:
    """Valid orders at a steady rate to the campaigns still open, some cancelled a little
    later, each on the orders topic of the site it names; every message sent again until
    Kafka acknowledged it (acks=all, idempotent)."""

    def __init__(
        self, settings: Settings, deadlines: dict[str, datetime], rate: float, seed: int
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.deadlines = deadlines
        self.rate = rate
        self.rng = random.Random(seed)
        self.acknowledged: list[dict[str, Any]] = []
        self.resends = 0
        self.producers = 0  # made; a new one after each refused send
        self.failure: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="order-stream", daemon=True)
        self._producer: KafkaProducer | None = None
        self._in_flight: list[tuple[dict[str, Any], Any, int]] = []  # message, future, producer
        self._retry: list[dict[str, Any]] = []
        self._cancels: list[tuple[float, dict[str, Any]]] = []

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        """Wait until the stream ended and Kafka acknowledged every message."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.stop.set()
            raise AssertionError(
                f"the order stream was still sending after {timeout:.0f} s: "
                f"{len(self._in_flight)} unacknowledged, {len(self._retry)} to send again"
            )
        if self.failure is not None:
            raise AssertionError(f"the order stream failed: {self.failure!r}")

    def count(self, kind: str) -> int:
        return sum(m["type"] == kind for m in self.acknowledged)

    def progress(self) -> str:
        """What was sent, for a report when the accounting did not get to its figures."""
        return (
            f"{self.count('order.placed')} orders and {self.count('order.cancelled')} "
            f"cancellations acknowledged, {self.resends} sent again"
        )

    def _run(self) -> None:
        try:
            self._stream()
            self._drain()
        except BaseException as error:
            self.failure = error
        finally:
            self._close_producer()

    def _stream(self) -> None:
        number, next_at = 0, time.monotonic()
        while not self.stop.is_set():
            self._collect()
            still_open = self._open_campaigns()
            if not still_open:
                return
            self._send_again()
            self._send_due_cancels(set(still_open))
            now = time.monotonic()
            if now >= next_at:
                self._send(self._order(number, self.rng.choice(still_open)))
                number += 1
                next_at = max(next_at + 1 / self.rate, now - 1.0)  # no burst after a stall
            self.stop.wait(0.01)

    def _drain(self) -> None:
        while (self._in_flight or self._retry) and not self.stop.is_set():
            self._collect()
            self._send_again()
            self.stop.wait(0.05)

    def _producer_now(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                **site_client(self.settings),
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                request_timeout_ms=5_000,
                delivery_timeout_ms=60_000,
                max_block_ms=10_000,
            )
            self.producers += 1
        return self._producer

    def _close_producer(self) -> None:
        """Close at once: what it had not sent fails, and is sent again by the next one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with suppress(KafkaError):
                producer.close(timeout=0)

    def _open_campaigns(self) -> list[str]:
        now = datetime.now(UTC)
        return [c for c, d in self.deadlines.items() if (d - now).total_seconds() > MARGIN]

    def _order(self, number: int, campaign_id: str) -> dict[str, Any]:
        site = SITES[number % len(SITES)]
        message: dict[str, Any] = {
            "type": "order.placed",
            "order_id": f"{site}:{campaign_id}:{number}",
            "site_id": site,
            "campaign_id": campaign_id,
            "buyer_id": f"b-{self.rng.randrange(40)}",
            "quantity": self.rng.randint(1, 3),
            "placed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        limit = self.rng.choice([None, None, None, "10.00", "8.00", "6.00"])
        return message | ({"max_unit_price": limit} if limit else {})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            future = self._producer_now().send(
                self.topics.site_orders(message["site_id"]),
                key=message["campaign_id"].encode(),
                value=json.dumps(message).encode(),
            )
        except KafkaError:
            self._retry.append(message)
            self.resends += 1
            self._close_producer()
            return
        self._in_flight.append((message, future, self.producers))

    def _send_again(self) -> None:
        retry, self._retry = self._retry, []
        for message in retry:
            self._send(message)

    def _send_due_cancels(self, still_open: set[str]) -> None:
        now = time.monotonic()
        due = [c for at, c in self._cancels if at <= now]
        self._cancels = [(at, c) for at, c in self._cancels if at > now]
        for cancel in due:
            if cancel["campaign_id"] in still_open:
                self._send(cancel)

    def _collect(self) -> None:
        """Note what Kafka acknowledged; queue what it refused; plan cancellations of some
        acknowledged orders (only then, so a cancellation always follows its order).

        After a refusal the producer is replaced: kafka-python 3.0.12's idempotent producer
        sends nothing more once a batch of it expired (seen across a broker restart).
        """
        pending = []
        refused = False
        for message, future, producer in self._in_flight:
            if not future.is_done:
                pending.append((message, future, producer))
            elif future.failed():
                self._retry.append(message)
                self.resends += 1
                refused |= producer == self.producers and self._producer is not None
            else:
                self.acknowledged.append(message)
                if message["type"] == "order.placed" and self.rng.random() < 0.15:
                    at = time.monotonic() + self.rng.uniform(0.5, 3.0)
                    self._cancels.append((at, cancelled(message)))
        self._in_flight = pending
        if refused:
            self._close_producer()  # its unsent messages fail, to be collected next time


def cancelled(order: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "order.cancelled",
        "order_id": order["order_id"],
        "site_id": order["site_id"],
        "campaign_id": order["campaign_id"],
        "cancelled_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
