"""`groupbuy ingest --workers N`: one member of the consumer group, N processes at work."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack, suppress
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from consumers.batch import position_name
from consumers.ingest import IngestBatch, IngestSink
from consumers.loop import RETRY_PAUSE, TrackedLoop
from domain.application import GroupBuying
from infra.adapters import kafka_clients, metrics
from infra.adapters.app import ONE_USER, open_app
from infra.adapters.metrics import IngestMetrics
from infra.adapters.topics import Topics
from infra.services.ingest import MAX_RECORDS, join_ingest_group
from infra.settings import Settings

log = logging.getLogger(__name__)
RELEASE_TIMEOUT = 60.0  # seconds a worker may take to finish its batch and let go
BOUNDS_EVERY = 1.0  # seconds between looks at where the partitions end, to split backlogs
Offsets = dict[TopicPartition, OffsetAndMetadata]


class WorkerDiedError(RuntimeError):
    """A worker process exited on its own: the ingest stops, to be restarted."""


def split_by_backlog(
    backlogs: dict[TopicPartition, int], workers: int
) -> list[list[TopicPartition]]:
    """The partitions in `workers` shares of about equal backlog.

    Partitions of one number go to one share: every site's orders topic has the same
    partitions, so a campaign's key is in the partition of that number in each of them, and
    one worker alone then applies a campaign's orders (two would both load it and refuse
    each other's saves). The numbers go by backlog, the largest first, each to the share
    with the least so far (of equal shares, the one with fewer partitions, then the first;
    numbers of equal backlog in their order).
    """
    numbers: dict[int, list[TopicPartition]] = defaultdict(list)
    for partition in sorted(backlogs, key=lambda p: (p.partition, p.topic)):
        numbers[partition.partition].append(partition)
    load = {number: sum(backlogs[p] for p in group) for number, group in numbers.items()}
    shares: list[list[TopicPartition]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for number in sorted(numbers, key=lambda n: (-load[n], n)):
        least = min(range(workers), key=lambda n: (loads[n], len(shares[n]), n))
        shares[least].extend(numbers[number])
        loads[least] += load[number]
    return shares


def run_ingest_workers(settings: Settings, stop: threading.Event, workers: int) -> None:
    """Apply orders with `workers` processes until `stop` is set."""
    context = multiprocessing.get_context("fork")  # before any thread or connection exists
    pipes = [context.Pipe() for _ in range(workers)]
    processes = []
    for number, (_, theirs) in enumerate(pipes):
        inherited = [end for pair in pipes for end in pair if end is not theirs]
        process = context.Process(
            target=_work,
            args=(settings, theirs, inherited, stop),
            name=f"ingest-worker-{number}",
            daemon=True,
        )
        process.start()
        processes.append(process)
    for _, theirs in pipes:
        theirs.close()  # so that a worker's death reads as the end of its pipe
    group = [Worker(process, ours) for process, (ours, _) in zip(processes, pipes, strict=True)]
    # On the way out: the workers let go, the app closes, the group is left, the workers stop.
    with ExitStack() as cleanup:
        cleanup.callback(_stop_all, group)
        consumer, subscription, app = join_ingest_group(settings, cleanup)
        coordinator = Coordinator(consumer, app, group)
        subscription.start(coordinator)
        cleanup.callback(coordinator.release)
        coordinator.run(stop)


class Worker:
    """A worker process and the coordinator's end of its pipe."""

    def __init__(self, process: BaseProcess, pipe: Connection) -> None:
        self.process, self.pipe = process, pipe
        # The main thread and kafka-python's IO thread (rebalance callbacks) both use it.
        self.lock = threading.Lock()

    def send(self, *message: Any) -> None:
        """Send, or do nothing if the worker is gone (which `receive` then says)."""
        with self.lock, suppress(OSError):
            self.pipe.send(message)

    def receive(self) -> tuple[Any, ...] | None:
        """The next message from the worker, or None if there is none yet."""
        try:
            with self.lock:
                return self.pipe.recv() if self.pipe.poll() else None
        except (EOFError, OSError):
            raise self.died() from None

    def died(self) -> WorkerDiedError:
        self.process.join(timeout=5)
        return WorkerDiedError(f"{self.process.name} exited (code {self.process.exitcode})")


class Coordinator(ConsumerRebalanceListener):  # type: ignore[misc]
    """The group member: shares its partitions out, collects positions, watches workers."""

    def __init__(self, consumer: KafkaConsumer, app: GroupBuying, workers: list[Worker]) -> None:
        self.consumer, self.app, self.workers = consumer, app, workers
        self.saved = metrics.batch_saved("ingest")
        self.lagging = metrics.lag_reporter("ingest")
        self.lags: dict[str, dict[TopicPartition, int]] = {}  # each worker's, by its name
        metrics.INGEST_WORKERS.set(len(workers))
        self.bounds: dict[TopicPartition, tuple[int, int]] = {}  # first and next offsets
        self.bounds_at = -BOUNDS_EVERY
        self.holding = False  # whether the workers were given partitions since the last release

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if time.monotonic() - self.bounds_at >= BOUNDS_EVERY:
                self._look_at_bounds()  # before the first poll, which joins the group
            # Fetches nothing (its partitions are paused): heartbeats and rebalances.
            self.consumer.poll(timeout_ms=100)
            if not stop.is_set():
                self._collect()

    # kafka-python calls these two on its IO thread, which must not wait for Kafka.

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.consumer.pause(*assigned)
        backlogs = {partition: self._backlog(partition) for partition in assigned}
        for worker, share in zip(
            self.workers, split_by_backlog(backlogs, len(self.workers)), strict=True
        ):
            log.info(
                "%s: %s (%d waiting)",
                worker.process.name,
                ", ".join(position_name(p.topic, p.partition) for p in share) or "none",
                sum(backlogs[p] for p in share),
            )
            worker.send("assign", share)
        self.holding = True
        if not assigned:  # no worker will report: none has anything to do
            self.lags.clear()
            self.lagging({})

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.release()

    def release(self) -> None:
        """Every worker lets go of its partitions (and its cached campaigns).

        Before the group moves on, so that no partition's new owner starts while one of
        ours still writes it (fencing would refuse that, at a cost). On the way out, the
        main thread calls this before leaving the group, so that kafka-python's IO thread
        does not wait on the workers. A worker that died writes nothing more; the main
        loop stops the ingest for it.
        """
        if not self.holding:
            return
        self.holding = False
        waiting = [worker for worker in self.workers if worker.process.is_alive()]
        for worker in waiting:
            worker.send("release")
        deadline = time.monotonic() + RELEASE_TIMEOUT
        while waiting := [worker for worker in waiting if not self._released(worker)]:
            if time.monotonic() > deadline:
                names = ", ".join(worker.process.name for worker in waiting)
                log.error(
                    "%s did not let go of their partitions; their saves will be refused", names
                )
                return
            time.sleep(0.005)

    def _released(self, worker: Worker) -> bool:
        try:
            while (message := worker.receive()) is not None:
                if message[0] == "released":
                    self.lags.pop(worker.process.name, None)
                    return True
                self._handle(worker, message)
        except WorkerDiedError:
            return True
        return False

    def _collect(self) -> None:
        for worker in self.workers:
            while (message := worker.receive()) is not None:
                self._handle(worker, message)
            if not worker.process.is_alive():
                metrics.INGEST_WORKERS.set(sum(w.process.is_alive() for w in self.workers))
                raise worker.died()

    def _handle(self, worker: Worker, message: tuple[Any, ...]) -> None:
        """What a worker tells: how far it got, and its metrics (the process that serves
        them is this one)."""
        kind = message[0]
        if kind == "moved":
            # Only for lag monitoring: a commit lost in a rebalance is harmless.
            self.consumer.commit_async(message[1])
        elif kind == "counted":
            IngestMetrics.count(message[1], message[2])
        elif kind == "parked":
            IngestMetrics.parked()
        elif kind == "saved":
            self.saved(message[1], message[2])
        elif kind == "lag":
            self.lags[worker.process.name] = message[1]
            self.lagging({p: n for lag in self.lags.values() for p, n in lag.items()})

    def _look_at_bounds(self) -> None:
        """Where each partition of the sites' orders topics starts and ends, for the next
        assignment."""
        partitions = [
            TopicPartition(topic, number)
            for topic in sorted(self.consumer.subscription() or ())
            for number in sorted(self.consumer.partitions_for_topic(topic) or ())
        ]
        firsts = self.consumer.beginning_offsets(partitions)
        ends = self.consumer.end_offsets(partitions)
        self.bounds = {partition: (firsts[partition], ends[partition]) for partition in partitions}
        self.bounds_at = time.monotonic()

    def _backlog(self, partition: TopicPartition) -> int:
        """Records waiting in a partition, from its stored position to its end as last seen
        (at most BOUNDS_EVERY ago; 0 for a partition not seen yet, or if the database cannot
        say: the shares are then only even in number, and the workers are not held up)."""
        first, end = self.bounds.get(partition, (0, 0))
        try:
            stored = self.app.max_tracking_id(position_name(partition.topic, partition.partition))
        except (PersistenceError, psycopg.Error) as error:
            log.warning("no stored position for %s (%s); sharing it out as empty", partition, error)
            return 0
        return max(0, end - (first if stored is None else stored + 1))


def _stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.send("stop")
    for worker in workers:
        worker.process.join(timeout=RELEASE_TIMEOUT)
        if worker.process.is_alive():
            log.error("%s did not stop; killing it", worker.process.name)
            worker.process.kill()  # it ignores SIGTERM


def _work(
    settings: Settings, pipe: Connection, inherited: list[Connection], stop: threading.Event
) -> None:
    """A worker: applies the partitions it is given until told to stop or left alone."""
    for end in inherited:
        end.close()
    # Ctrl-C reaches the whole process group, and a service manager may send SIGTERM to
    # every process of the service: the coordinator alone decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    topics = Topics(settings.topic_prefix)
    with ExitStack() as cleanup:
        consumer = kafka_clients.consumer(settings, None, **kafka_clients.GATHERED_FETCHES)
        cleanup.callback(consumer.close, autocommit=False)
        # The coordinator makes the tables before it can assign this worker anything.
        app = open_app(settings, **ONE_USER, CREATE_TABLE="n")
        cleanup.callback(app.close)
        sink = IngestSink(app, topics, PipedMetrics(pipe))
        loop = TrackedLoop(
            consumer,
            sink,
            MAX_RECORDS,
            commit=_reporter(pipe),
            saved=lambda count, seconds: _tell(pipe, "saved", count, seconds),
            lagging=lambda lag: _tell(pipe, "lag", lag),
        )
        unread: list[TopicPartition] = []  # assigned, but their stored positions not yet read
        while not stop.is_set():
            assigned = list(consumer.assignment())
            try:
                wait = RETRY_PAUSE if unread else 0 if assigned else 0.1
                message = pipe.recv() if pipe.poll(wait) else None
            except (EOFError, OSError):
                log.warning("the coordinator is gone; stopping")
                return
            if message is None:
                if unread:
                    unread = _seek_to_stored(loop, unread)
                elif assigned:
                    loop.poll_once()
            elif message[0] == "assign":
                if assigned:  # not told to let go first: still, forget what it cached
                    loop.on_partitions_revoked(assigned)
                consumer.assign(message[1])
                # Asked for briefly apart, so that the first fetch goes at once.
                kafka_clients.know_topics(consumer, sorted({tp.topic for tp in message[1]}))
                unread = _seek_to_stored(loop, message[1])
            elif message[0] == "release":
                unread = []
                loop.on_partitions_revoked(assigned)
                consumer.unsubscribe()
                with suppress(OSError):  # the coordinator is gone: the next look says so
                    pipe.send(("released",))
            elif message[0] == "stop":
                return


def _seek_to_stored(loop: TrackedLoop, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """Seek each partition to its stored position; all of them again if the database failed
    (the worker then reads nothing from them, and tries again after RETRY_PAUSE)."""
    try:
        loop.on_partitions_assigned(partitions)
    except (PersistenceError, psycopg.Error, KafkaError) as error:
        log.warning("cannot read the stored positions (%s); again in %.0f s", error, RETRY_PAUSE)
        return partitions
    return []


def _reporter(pipe: Connection) -> Callable[[Offsets], None]:
    def report(offsets: Offsets) -> None:
        _tell(pipe, "moved", offsets)

    return report


def _tell(pipe: Connection, *message: Any) -> None:
    with suppress(OSError):  # the coordinator is gone: the next look at the pipe says so
        pipe.send(message)


class PipedMetrics:
    """A worker's ingest counts, sent to the coordinator, which serves the metrics."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe

    def saved(self, batch: IngestBatch) -> None:
        _tell(self.pipe, "counted", batch.tally, batch.dead_letters)

    def parked(self) -> None:
        _tell(self.pipe, "parked")
