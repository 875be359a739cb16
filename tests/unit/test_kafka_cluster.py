"""The local cluster's shape and the replicas of groupbuy's topics, from their settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from infra.adapters import kafka_clients
from infra.adapters.topics import durability, replication_from_env
from infra.local.common import LauncherError
from infra.local.kafka_cluster import (
    LocalKafkaCluster,
    kafka_nodes,
    local_kafka_bootstrap,
    replication_settings,
)


def test_three_nodes_are_three_voters_on_consecutive_ports(tmp_path: Path) -> None:
    cluster = LocalKafkaCluster.at(tmp_path, 40000, 41000, 3)
    assert cluster.bootstrap == "127.0.0.1:40000,127.0.0.1:40001,127.0.0.1:40002"
    settings = [node._broker_settings() for node in cluster.nodes]
    assert [s["node.id"] for s in settings] == ["1", "2", "3"]
    voters = "1@127.0.0.1:41000,2@127.0.0.1:41001,3@127.0.0.1:41002"
    assert {s["controller.quorum.voters"] for s in settings} == {voters}
    assert [s["listeners"] for s in settings][1] == (
        "PLAINTEXT://127.0.0.1:40001,CONTROLLER://127.0.0.1:41001"
    )
    assert {s["log.dirs"] for s in settings} == {
        str(tmp_path / f"node-{n}" / "data") for n in (1, 2, 3)
    }


def test_every_node_formats_its_storage_with_the_one_cluster_id(tmp_path: Path) -> None:
    cluster = LocalKafkaCluster.at(tmp_path, 40000, 41000, 3)
    ids = {node._cluster_id() for node in cluster.nodes}
    assert len(ids) == 1
    assert len(ids.pop()) == 22


def test_three_nodes_keep_three_replicas_and_want_two_in_sync() -> None:
    three = replication_settings(3)
    assert three["default.replication.factor"] == three["offsets.topic.replication.factor"] == "3"
    assert three["transaction.state.log.replication.factor"] == "3"
    assert three["min.insync.replicas"] == three["transaction.state.log.min.isr"] == "2"
    two = replication_settings(2)
    assert two["default.replication.factor"] == "2"
    assert two["min.insync.replicas"] == "1"


def test_the_number_of_nodes_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROUPBUY_KAFKA_NODES", raising=False)
    assert kafka_nodes() == 1
    monkeypatch.setenv("GROUPBUY_KAFKA_NODES", "3")
    assert kafka_nodes() == 3
    for wrong in ("0", "three", "10", "-1"):
        monkeypatch.setenv("GROUPBUY_KAFKA_NODES", wrong)
        with pytest.raises(LauncherError, match="GROUPBUY_KAFKA_NODES must be 1 to 9"):
            kafka_nodes()


def test_the_local_bootstrap_names_every_node_of_a_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GROUPBUY_KAFKA_CLUSTER_PORT", "39000")
    monkeypatch.setenv("GROUPBUY_KAFKA_PORT", "39500")
    monkeypatch.setenv("GROUPBUY_KAFKA_NODES", "3")
    assert local_kafka_bootstrap() == "127.0.0.1:39000,127.0.0.1:39001,127.0.0.1:39002"
    monkeypatch.setenv("GROUPBUY_KAFKA_NODES", "1")
    assert local_kafka_bootstrap() == "127.0.0.1:39500"


def test_replication_follows_the_cluster_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROUPBUY_TOPIC_REPLICATION", raising=False)
    assert [replication_from_env(brokers) for brokers in (1, 2, 3, 5)] == [1, 1, 3, 3]
    monkeypatch.setenv("GROUPBUY_TOPIC_REPLICATION", "2")
    assert replication_from_env(3) == 2
    with pytest.raises(ValueError, match="is 2, but the Kafka cluster has 1 broker:"):
        replication_from_env(1)
    monkeypatch.setenv("GROUPBUY_TOPIC_REPLICATION", "0")
    with pytest.raises(ValueError, match="GROUPBUY_TOPIC_REPLICATION must be a whole number"):
        replication_from_env(3)


def test_three_replicas_want_two_in_sync_fewer_want_one() -> None:
    assert [durability(n)["min.insync.replicas"] for n in (1, 2, 3, 5)] == ["1", "1", "2", "2"]


class NeverDone:
    """A transaction step's result that never completes, as kafka-python's was seen to."""

    def wait(self, timeout_ms: float | None = None) -> bool:
        assert timeout_ms is not None, "waited without a limit"
        return False


class StalledProducer:
    def __init__(self) -> None:
        self._sender = type("Sender", (), {"wakeup": lambda self: None})()
        self._transaction_manager = type(
            "Manager",
            (),
            {
                "begin_commit": lambda self: NeverDone(),
                "begin_abort": lambda self: NeverDone(),
                "send_offsets_to_transaction": lambda self, offsets, group: NeverDone(),
            },
        )()


def test_a_stalled_transaction_step_gives_up_naming_the_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_clients, "TRANSACTION_STEP_TIMEOUT", 0.01)
    producer: Any = StalledProducer()
    for step, call in (
        ("commit", lambda: kafka_clients.commit_within(producer)),
        ("abort", lambda: kafka_clients.abort_within(producer)),
        ("offsets", lambda: kafka_clients.send_offsets_within(producer, {}, "group")),
    ):
        with pytest.raises(KafkaTimeoutError, match=f"transaction's {step} within 0 s"):
            call()
