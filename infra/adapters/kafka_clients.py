"""Every Kafka client groupbuy makes, configured one way: producers, consumers, admin, topics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from typing import Any

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, KafkaTimeoutError

from infra.adapters.kafka_joins import keep_finished_joins
from infra.adapters.topics import (
    SETTLEMENT_MAX_BYTES,
    Topics,
    durability,
    replication_from_env,
)
from infra.settings import Settings

keep_finished_joins()  # before any consumer joins a group

STARTING_BACKOFF_MS = 10  # between metadata requests while a consumer starts
TOPIC_ALREADY_EXISTS = 36  # Kafka's error code; another process created it first


def connection(settings: Settings) -> dict[str, Any]:
    """What every client needs to reach the brokers, and to prove who it is to them."""
    return {"bootstrap_servers": settings.kafka_bootstrap} | (
        settings.kafka_security.client_options()
    )


def admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(**connection(settings), client_id="groupbuy")


def producer(settings: Settings, **options: Any) -> KafkaProducer:
    """Idempotent and fully acknowledged: a retried send is never written twice."""
    defaults = {"enable_idempotence": True, "acks": "all", "linger_ms": 5}
    return KafkaProducer(**connection(settings), **(defaults | options))


def transactional_producer(
    settings: Settings, transactional_id: str, **options: Any
) -> KafkaProducer:
    """A producer whose sends (and consumer offsets, for settle) commit together, or not at
    all: settle's and the relay's. By default its largest message is a purchase order."""
    defaults = {
        "acks": "all",
        "max_request_size": SETTLEMENT_MAX_BYTES,
        # A transaction begun just after the last one committed is refused (concurrent
        # transactions) until the broker has written the last one's markers, a few ms;
        # kafka-python then retries after this backoff, 100 ms by default. With 10 ms, the
        # relay's turns that waited 105 to 110 ms in their flush wait 20 to 50 ms, and its
        # p99 at 100 orders a second fell from 193 to 115 ms (bench/latency.py).
        "retry_backoff_ms": 10,
    }
    return KafkaProducer(
        **connection(settings), transactional_id=transactional_id, **(defaults | options)
    )


# The longest a transaction's step (adding offsets, committing, aborting) may take: longer
# than a leader election and a coordinator's move after a broker is lost (seconds).
TRANSACTION_STEP_TIMEOUT = 60.0


def send_offsets_within(
    producer: KafkaProducer, offsets: dict[Any, Any], group_metadata: Any
) -> None:
    """`send_offsets_to_transaction`, but raising KafkaTimeoutError after
    TRANSACTION_STEP_TIMEOUT (see `_step_within`)."""
    manager = producer._transaction_manager
    _step_within(producer, manager.send_offsets_to_transaction(offsets, group_metadata), "offsets")


def commit_within(producer: KafkaProducer) -> None:
    """`commit_transaction`, but raising KafkaTimeoutError after TRANSACTION_STEP_TIMEOUT."""
    _step_within(producer, producer._transaction_manager.begin_commit(), "commit")


def abort_within(producer: KafkaProducer) -> None:
    """`abort_transaction`, but raising KafkaTimeoutError after TRANSACTION_STEP_TIMEOUT."""
    _step_within(producer, producer._transaction_manager.begin_abort(), "abort")


def _step_within(producer: KafkaProducer, result: Any, step: str) -> None:
    """Wait for a transaction step as kafka-python's own methods do, but not for ever: in
    kafka-python 3.0.12 they wait without a limit, and settle was seen waiting for good
    after a three-node cluster lost the broker that coordinated its transactions
    (tests/reliability/test_cluster.py). The caller then drops the producer; its
    successor's init_transactions fences it and aborts what it left open. Uses the
    producer's private `_transaction_manager` and `_sender`, as its public methods do."""
    producer._sender.wakeup()
    if not result.wait(timeout_ms=TRANSACTION_STEP_TIMEOUT * 1000):
        raise KafkaTimeoutError(
            f"Kafka did not finish the transaction's {step} within {TRANSACTION_STEP_TIMEOUT:.0f} s"
        )


def confirm(producer: KafkaProducer, futures: list[Any]) -> None:
    """Wait until Kafka acknowledged every send; raise if it refused one.

    Callers mark messages as published only after this returns, so a refusal (or a crash
    before it) leaves them to be sent again: at least once.
    """
    producer.flush()
    for future in futures:
        future.get(timeout=0)


def group_id(settings: Settings, group: str) -> str:
    """The Kafka consumer group of service group `group` in this installation: under the
    topic prefix, and named after the database schema too. Two installations that share a
    cluster and a prefix but keep their events in two schemas then each read every
    partition, instead of splitting them and each missing the other's share."""
    return f"{settings.topic_prefix}{group}.{settings.database_schema}"


# Orders come one at a time, and ingest pays a database transaction per poll: at 500 orders
# a second, polls of one or two orders each cost it a third of a core on this machine and
# slowed everything sharing it. With these, the broker holds ingest's fetch until 64 KiB
# are there or 20 ms have passed, so each poll takes what 20 ms brought: ingest 35% -> 23%
# of a core and the broker 37% -> 24%. Not the projector's: the relay's transactions hand
# it batches already, and an idle projector would fetch 50 times a second.
GATHERED_FETCHES: dict[str, Any] = {"fetch_min_bytes": 64 * 1024, "fetch_max_wait_ms": 20}


def consumer(settings: Settings, group: str | None, **options: Any) -> KafkaConsumer:
    """A group member that never commits by itself: positions live in PostgreSQL. Without
    a group, a reader of the partitions it is assigned. `options` override the defaults."""
    defaults: dict[str, Any] = dict(
        **connection(settings),
        group_id=None if group is None else group_id(settings, group),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=2000,
        fetch_max_bytes=16 * 1024 * 1024,
        # One fetch is in flight per broker: a partition with data waits behind the long
        # poll of those already drained (Kafka's default: 500 ms).
        fetch_max_wait_ms=100,
        # A crashed member's partitions move to the others after this long.
        session_timeout_ms=10_000,
        # A member that joins gets partitions once the others have heard of the rebalance
        # in a heartbeat: a second ingest process starts working within a quarter second.
        heartbeat_interval_ms=250,
        metadata_max_age_ms=10_000,  # notice new partitions in seconds, not minutes
        # Topics are made by ensure_topics with their configured partitions, never by
        # asking for their metadata (a broker's default would give one partition).
        allow_auto_create_topics=False,
    )
    return KafkaConsumer(**(defaults | options))


def reader(settings: Settings, **options: Any) -> KafkaConsumer:
    """A consumer in no group, for partitions it assigns itself: read, never committed. It
    reads committed transactions only, as every reader of the relay's topics must."""
    defaults = {"isolation_level": "read_committed"}
    return KafkaConsumer(**connection(settings), group_id=None, **(defaults | options))


def ensure_topics(settings: Settings, names: list[str]) -> None:
    """Create the missing topics among `names` with a client of their own."""
    with closing(admin(settings)) as client:
        create_topics(client, Topics(settings.topic_prefix), names)


def create_topics(client: KafkaAdminClient, topics: Topics, names: list[str]) -> None:
    """Create the missing topics among `names`, with their settings (`Topics.configs`) and
    replicas (GROUPBUY_TOPIC_REPLICATION, `durability`)."""
    replication = replication_from_env(len(client.describe_cluster()["brokers"]))

    def configs(name: str) -> dict[str, str]:
        return topics.configs(name) | durability(replication)

    wanted = {
        name: {
            "num_partitions": topics.partitions(name),
            "replication_factor": replication,
            "configs": configs(name),
        }
        for name in names
    }
    response = client.create_topics(wanted, raise_errors=False)
    for result in response["topics"]:
        if result["error_code"] not in (0, TOPIC_ALREADY_EXISTS):
            raise RuntimeError(
                f"cannot create Kafka topic {result['name']}: {result['error_message']}"
            )
    if timed := [name for name in names if topics.is_site_orders(name)]:
        # A topic made earlier by hand may time orders by the sites' clocks: correct it.
        resources = [
            # Not incremental: every setting of the topic is said again.
            ConfigResource(ConfigResourceType.TOPIC, name, configs=configs(name))
            for name in timed
        ]
        client.alter_configs(resources, raise_on_unknown=False)
    client.wait_for_topics(names)


class CoordinatorNotFoundError(RuntimeError):
    """The brokers named no coordinator for a consumer group in time."""


def wait_for_coordinator(settings: Settings, *groups: str, timeout: float = 60.0) -> None:
    """Wait until the brokers name a coordinator for each group (`group_id`).

    A new cluster makes its __consumer_offsets topic when a group first asks for its
    coordinator, and until then answers CoordinatorNotAvailable: a consumer waits that out
    by itself, an admin call fails at once.
    """
    names = [group_id(settings, group) for group in groups]
    if not names:
        return
    deadline = time.monotonic() + timeout
    with closing(admin(settings)) as client:
        while True:
            try:
                client.describe_groups(names)
                return
            except KafkaError as error:
                if not error.retriable:
                    raise
                if time.monotonic() > deadline:
                    raise CoordinatorNotFoundError(
                        f"Kafka at {settings.kafka_bootstrap} named no coordinator for the "
                        f"consumer groups {', '.join(names)} within {timeout:.0f} s: {error}"
                    ) from error
            time.sleep(0.2)


def delete_topics_named(settings: Settings, prefix: str) -> None:
    """Deletes the topics whose names start with `prefix` (a test's or a benchmark's): a
    broker holding thousands of leftovers makes every client's first metadata request, and
    so every service's start, slower."""
    with closing(admin(settings)) as client:
        ours = [topic for topic in client.list_topics() if topic.startswith(prefix)]
        if ours:
            client.delete_topics(ours)


def subscribe(consumer: KafkaConsumer, topics: list[str], listener: object) -> None:
    """Subscribe, then let the group be joined (by the first poll) only once the consumer's
    metadata knows every topic."""
    Subscription(consumer, topics).start(listener)


def know_topics(consumer: KafkaConsumer, topics: list[str]) -> None:
    """Wait until the consumer's metadata knows every topic, asking for it briefly apart.

    For a reader of assigned partitions, before they are assigned: it then fetches at once.
    """
    with brief_metadata_backoff(consumer):
        _wait_for_topics(consumer, topics)


@contextmanager
def brief_metadata_backoff(consumer: KafkaConsumer) -> Iterator[None]:
    """While inside, kafka-python asks for metadata STARTING_BACKOFF_MS apart, not 0.1 s.

    kafka-python 3.0.12 asks for a new topic's metadata no sooner than its retry backoff
    (0.1 s) after its first metadata, and its metadata settings never get the consumer's
    `retry_backoff_ms`; Kafka's own client waits for no backoff before a failure
    (KAFKA-4024). A consumer knew its topic after 0.02 s instead of 0.11 s, and a reader
    given partitions fetched from them after 0.007 s instead of 0.06 to 0.08 s.
    """
    settings = metadata_settings(consumer)
    if settings is None:
        yield
        return
    backoff, settings["retry_backoff_ms"] = settings["retry_backoff_ms"], STARTING_BACKOFF_MS
    try:
        yield
    finally:
        settings["retry_backoff_ms"] = backoff


def metadata_settings(consumer: KafkaConsumer) -> dict[str, Any] | None:
    """kafka-python's settings for its cluster metadata: private, so None if a version no
    longer has them where 3.0.12 does."""
    settings = getattr(getattr(consumer, "_cluster", None), "config", None)
    if isinstance(settings, dict) and "retry_backoff_ms" in settings:
        return settings
    return None


def _wait_for_topics(consumer: KafkaConsumer, topics: list[str]) -> None:
    deadline = time.monotonic() + 60
    # partitions_for_topic gives an empty set, not None, for a topic it does not know yet.
    while not all(consumer.partitions_for_topic(topic) for topic in topics):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka does not know the topics {topics} after 60 s")
        time.sleep(0.01)


class Subscription(ConsumerRebalanceListener):  # type: ignore[misc]
    """A subscription made at once, whose listener is named when the service is ready.

    Kafka's metadata for the topics then comes while the service sets itself up, asked for
    briefly apart (`brief_metadata_backoff`) until `start`. The group is joined by the
    first poll, after `start`. That waits until the metadata knows every topic: a group
    leader that assigns before it has seen a just-created topic assigns none of its
    partitions, and nobody consumes them until the next metadata refresh. The subscription
    must come before that metadata: kafka-python takes the subscribed topics' partitions
    from each metadata update, and one that changes them after the first assignment makes
    the whole group join again (0.15 s, and every cached campaign reloaded).

    A subscription to a `pattern` follows every topic whose name matches it, those made
    later included (they are noticed at the next metadata refresh, `metadata_max_age_ms`).
    kafka-python asks for fresh metadata of every topic before it first joins the group.
    """

    def __init__(
        self, consumer: KafkaConsumer, topics: list[str] | None = None, pattern: str = ""
    ) -> None:
        self.consumer, self.topics = consumer, topics or []
        self.listener: Any = None
        self.until_started = ExitStack()
        self.until_started.enter_context(brief_metadata_backoff(consumer))
        if pattern:
            consumer.subscribe(pattern=pattern, listener=self)
        else:
            consumer.subscribe(self.topics, listener=self)

    def start(self, listener: object) -> None:
        """Name the listener (None: none) and wait until the metadata knows every topic."""
        self.listener = listener
        with self.until_started:
            _wait_for_topics(self.consumer, self.topics)

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.listener is not None:
            self.listener.on_partitions_revoked(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self.listener is not None:
            self.listener.on_partitions_assigned(assigned)
