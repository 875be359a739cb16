"""A Kafka cluster on loopback: `GROUPBUY_KAFKA_NODES=3 make up` starts three nodes, each a
broker and a controller in one JVM, with topics replicated three times and two replicas in
sync required for a write to count (as in production, and unlike the single broker).

Three combined nodes rather than three controllers and three brokers: six JVMs would share
this machine's two cores and each do little, and three voters already let the quorum lose
one. Each node's heap is GROUPBUY_KAFKA_NODE_HEAP (512m), 1.5 GiB for the three.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from infra.local.common import (
    LOOPBACK,
    LauncherError,
    port_from_env,
    require_free_port,
    state_dir,
)
from infra.local.kafka import (
    Launch,
    LocalKafka,
    check_java,
    fetch_jars,
    kafka_version,
    new_cluster_id,
)

NODE_HEAP = os.environ.get("GROUPBUY_KAFKA_NODE_HEAP", "512m")
MOST_NODES = 9  # one machine's worth; a bigger cluster is not a local one


def kafka_nodes() -> int:
    """`GROUPBUY_KAFKA_NODES`: how many nodes the local Kafka has (1, the default, is the
    single broker)."""
    raw = os.environ.get("GROUPBUY_KAFKA_NODES", "").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= MOST_NODES:
        raise LauncherError(f"GROUPBUY_KAFKA_NODES must be 1 to {MOST_NODES}, got {raw!r}")
    return int(raw)


def replication_settings(nodes: int) -> dict[str, str]:
    """What every node says about replicas: each partition (the internal topics' too) on up
    to three nodes, and a write acknowledged by `acks=all` only once two hold it."""
    factor = str(min(3, nodes))
    in_sync = "2" if nodes >= 3 else "1"
    return {
        "default.replication.factor": factor,
        "min.insync.replicas": in_sync,
        "offsets.topic.replication.factor": factor,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": in_sync,
        "share.coordinator.state.topic.replication.factor": factor,
        "share.coordinator.state.topic.min.isr": in_sync,
        # A killed node is fenced, and its partitions led elsewhere, after 3 s (Kafka: 9 s);
        # loopback heartbeats are not lost to a slow network.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        # A restarted node leads its preferred partitions again within half a minute.
        "leader.imbalance.check.interval.seconds": "30",
    }


@dataclass(frozen=True)
class ClusterNode(LocalKafka):
    """One node of the local cluster: its own ports, folder and log; the cluster's id and
    voters."""

    node_id: int = 1
    voters: str = ""
    size: int = 1

    @property
    def heap(self) -> str:
        return NODE_HEAP

    def _broker_settings(self) -> dict[str, str]:
        return (
            super()._broker_settings()
            | replication_settings(self.size)
            | {"node.id": str(self.node_id), "controller.quorum.voters": self.voters}
        )

    def _cluster_id(self) -> str:
        """Every node's storage is formatted with one id, made by whichever is first."""
        path = self.home.parent / "cluster.id"
        if not path.exists():
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    def prepare(self) -> Path:
        """Its folder, configuration and formatted storage; the configuration's path."""
        require_free_port(self.port, f"Kafka node {self.node_id}", "GROUPBUY_KAFKA_CLUSTER_PORT")
        require_free_port(
            self.controller_port,
            f"Kafka node {self.node_id}'s controller",
            "GROUPBUY_KAFKA_CLUSTER_CONTROLLER_PORT",
        )
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.home / "data" / "meta.properties").exists():
            self._format(fetch_jars(), config)
        return config

    def spawn(self, config: Path) -> Launch:
        return self._spawn(fetch_jars(), config)

    def wait_started(self, launch: Launch) -> None:
        self._await(launch)


@dataclass(frozen=True)
class LocalKafkaCluster:
    nodes: tuple[ClusterNode, ...]

    @classmethod
    def from_env(cls, size: int | None = None) -> LocalKafkaCluster:
        """Node n (from 1) listens on GROUPBUY_KAFKA_CLUSTER_PORT + n - 1 (29101 on) and its
        controller on GROUPBUY_KAFKA_CLUSTER_CONTROLLER_PORT + n - 1 (29201 on)."""
        return cls.at(
            state_dir() / "kafka-cluster",
            port_from_env("GROUPBUY_KAFKA_CLUSTER_PORT", 29101),
            port_from_env("GROUPBUY_KAFKA_CLUSTER_CONTROLLER_PORT", 29201),
            size or kafka_nodes(),
        )

    @classmethod
    def at(cls, home: Path, port: int, controller_port: int, size: int) -> LocalKafkaCluster:
        """`size` nodes under `home`, listening from `port` and `controller_port` on."""
        ids = range(1, size + 1)
        voters = ",".join(f"{n}@{LOOPBACK}:{controller_port + n - 1}" for n in ids)
        return cls(
            tuple(
                ClusterNode(
                    port=port + n - 1,
                    controller_port=controller_port + n - 1,
                    home=home / f"node-{n}",
                    node_id=n,
                    voters=voters,
                    size=size,
                )
                for n in ids
            )
        )

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    def is_running(self) -> bool:
        return all(node.is_running() for node in self.nodes)

    def start(self) -> str:
        """Start the nodes that are not running, together (a node's broker waits for a
        quorum of controllers); return a line saying what runs."""
        stopped = [node for node in self.nodes if not node.is_running()]
        if not stopped:
            return f"Kafka cluster of {len(self.nodes)} already running at {self.bootstrap}"
        check_java()
        launches = [(node, node.spawn(node.prepare())) for node in stopped]
        try:
            for node, launch in launches:
                node.wait_started(launch)
        except LauncherError:
            self.stop()
            raise
        return (
            f"Apache Kafka {kafka_version(fetch_jars())} cluster of {len(self.nodes)} nodes "
            f"started at {self.bootstrap} (logs: {self.nodes[0].home.parent}/node-*/kafka.log)"
        )

    def stop(self) -> bool:
        """Stop every node; False if none was running."""
        return any([node.stop() for node in self.nodes])


def local_kafka_bootstrap() -> str:
    """Where the Kafka that `make up` starts listens: the cluster's nodes when
    GROUPBUY_KAFKA_NODES is above 1, else the single broker."""
    if kafka_nodes() > 1:
        return LocalKafkaCluster.from_env().bootstrap
    return LocalKafka.from_env().bootstrap
