"""The Kafka topics of SPEC section 3, their names under the prefix, and their creation."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

TOPIC_ALREADY_EXISTS = 36  # Kafka's error code; another process created it first
# Orders are timed by the broker, so no site can backdate one (SPEC section 2, "Time").
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    @property
    def orders(self) -> str:
        return self.prefix + "groupbuy.orders.v1"

    @property
    def order_results(self) -> str:
        return self.prefix + "groupbuy.order-results.v1"

    @property
    def orders_dlq(self) -> str:
        return self.prefix + "groupbuy.orders.dlq.v1"

    @property
    def campaign_events(self) -> str:
        return self.prefix + "groupbuy.campaign-events.v1"

    @property
    def buyer_settlements(self) -> str:
        return self.prefix + "groupbuy.buyer-settlements.v1"

    def settlements(self, supplier_id: str) -> str:
        return f"{self.prefix}groupbuy.settlements.{supplier_id}.v1"

    def ingest_topics(self) -> list[str]:
        return [self.orders, self.order_results, self.orders_dlq]


def partitions_from_env() -> int:
    raw = os.environ.get("GROUPBUY_TOPIC_PARTITIONS", "8")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"GROUPBUY_TOPIC_PARTITIONS must be a whole number >= 1, got {raw!r}")
    return int(raw)


def ensure_topics(admin: KafkaAdminClient, topics: Topics, names: list[str]) -> None:
    """Create the missing topics among `names`; the orders topic always uses append time."""
    partitions = partitions_from_env()
    wanted = {
        name: {"num_partitions": partitions, "replication_factor": -1}
        | ({"configs": APPEND_TIME} if name == topics.orders else {})
        for name in names
    }
    response = admin.create_topics(wanted, raise_errors=False)
    for result in response["topics"]:
        if result["error_code"] not in (0, TOPIC_ALREADY_EXISTS):
            raise RuntimeError(
                f"cannot create Kafka topic {result['name']}: {result['error_message']}"
            )
    if topics.orders in names:
        # A topic made earlier by hand may time orders by the sites' clocks: correct it.
        resource = ConfigResource(ConfigResourceType.TOPIC, topics.orders, configs=APPEND_TIME)
        admin.alter_configs([resource], raise_on_unknown=False)
    admin.wait_for_topics(names)


def delete_topics_named(admin: KafkaAdminClient, prefix: str) -> None:
    """Deletes the topics whose names start with `prefix` (a test's or a benchmark's): a
    broker holding thousands of leftovers makes every client's first metadata request, and
    so every service's start, slower."""
    ours = [topic for topic in admin.list_topics() if topic.startswith(prefix)]
    if ours:
        admin.delete_topics(ours)
