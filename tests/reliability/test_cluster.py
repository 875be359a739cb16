"""A three-node Kafka cluster losing a node mid-stream: first the broker that leads the most
orders partitions, then the controller leader, each `kill -9`ed, left dead, and restarted.
With three replicas and two in sync required, the accounting stays exact and no service
exits: the clients find the new leaders by themselves."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import partial
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from infra.adapters.kafka_clients import admin
from infra.adapters.topics import Topics
from infra.local.common import read_pid
from infra.local.kafka_cluster import LocalKafkaCluster
from infra.settings import Settings
from tests.reliability.conftest import settings_on
from tests.reliability.test_outages import run_through, timed
from tests.support.faults import SCALE, PrivateServices, Scale

pytestmark = [pytest.mark.integration, pytest.mark.soak, pytest.mark.timeout(SCALE.test_timeout)]
NODES = 3
RESTART = 15.0  # seconds to start a node again and see it back in sync, about
INTERNAL = ("__consumer_offsets", "__transaction_state")


@pytest.fixture(scope="module")
def cluster_services() -> Iterator[PrivateServices]:
    """A three-node cluster and a database of this module's own."""
    private = PrivateServices.create(kafka_nodes=NODES)
    try:
        private.start()
        yield private
    finally:
        private.down()


def busiest_leader(client: KafkaAdminClient, settings: Settings) -> int:
    """The node leading the most partitions of the sites' orders topics."""
    topics = Topics(settings.topic_prefix)
    orders = [name for name in client.list_topics() if topics.is_site_orders(name)]
    leaders = Counter(
        partition["leader_id"]
        for topic in client.describe_topics(orders)
        for partition in topic["partitions"]
    )
    return leaders.most_common(1)[0][0]


def controller_leader(client: KafkaAdminClient, _: Settings) -> int:
    """The node leading the KRaft quorum, the active controller."""
    quorum = client.describe_metadata_quorum()
    return int(quorum["topics"][0]["partitions"][0]["leader_id"])


def fully_replicated(client: KafkaAdminClient, settings: Settings) -> bool:
    """Every partition of this test's topics, and of the offsets and transactions topics, has
    each of its replicas in sync."""
    names = [n for n in client.list_topics() if n.startswith(settings.topic_prefix)]
    return all(
        set(partition["isr_nodes"]) == set(partition["replica_nodes"])
        for topic in client.describe_topics([*names, *INTERNAL])
        for partition in topic["partitions"]
    )


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f} s"
        time.sleep(0.5)


Finder = Callable[[KafkaAdminClient, Settings], int]
LEADERS: dict[str, Finder] = {
    "orders partition leader": busiest_leader,
    "controller leader": controller_leader,
}


def leaders_lost(cluster: LocalKafkaCluster, settings: Settings, rounds: int, down: float) -> str:
    """`rounds` times: kill -9 each leader in turn, leave it dead `down` seconds, start it
    again and wait until every replica is back in sync (as a rolling restart would)."""
    said = []
    with closing(admin(settings)) as client:
        for _ in range(rounds):
            for role, find in LEADERS.items():
                node = cluster.node(find(client, settings))
                pid = read_pid(node.pid_file)
                assert pid is not None, f"Kafka node {node.node_id} was not running"
                os.kill(pid, signal.SIGKILL)
                time.sleep(down)
                with timed() as restarting:
                    cluster.start()  # the stopped node only
                    wait(partial(fully_replicated, client, settings), 120, "replicas in sync")
                said.append(f"{role} {node.node_id} killed, back in {restarting[0]:.0f} s")
    return "; ".join(said)


def test_a_cluster_losing_its_leaders_mid_stream_loses_nothing_and_stops_nothing(
    cluster_services: PrivateServices,
    unique: str,
    scale: Scale,
    seed: int,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    settings = settings_on(cluster_services, unique)
    cluster = cluster_services.cluster
    fault = partial(leaders_lost, cluster, settings, scale.leader_rounds, scale.node_down)
    length = scale.leader_rounds * len(LEADERS) * (scale.node_down + RESTART)
    exits = run_through(fault, length, settings, unique, scale, seed, tmp_path, report)
    assert not exits, f"services exited and were restarted: {exits}"
    assert_replicated(settings)


def assert_replicated(settings: Settings) -> None:
    """The topics groupbuy made have three replicas and want two in sync."""
    topics = Topics(settings.topic_prefix)
    with closing(admin(settings)) as client:
        orders = [n for n in client.list_topics() if topics.is_site_orders(n)]
        made = [topics.campaign_events, topics.orders_dlq, *orders]
        described = client.describe_topics(made)
        factors = {t["name"]: {len(p["replica_nodes"]) for p in t["partitions"]} for t in described}
        assert factors == {name: {NODES} for name in made}
        resource = ConfigResource(ConfigResourceType.TOPIC, topics.campaign_events)
        configs = client.describe_configs([resource])["topic"][topics.campaign_events]
    assert configs["min.insync.replicas"]["value"] == "2"


def test_the_launcher_shows_and_stops_the_cluster(cluster_services: PrivateServices) -> None:
    """Last in this module: it stops the cluster."""
    bootstrap = cluster_services.cluster.bootstrap
    status = cluster_services.launcher("status")
    assert f"the Kafka cluster: 3 of 3 nodes running at {bootstrap}" in status
    assert "the Kafka cluster stopped" in cluster_services.launcher("down")
    assert not any(node.is_running() for node in cluster_services.cluster.nodes)
    assert "Kafka cluster" not in cluster_services.launcher("status")
