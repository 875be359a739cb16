"""The Kafka topics of docs/contract.md: their names under the prefix, and their settings."""

from __future__ import annotations

import os
from dataclasses import dataclass

# Orders are timed by the broker, so no site can backdate one (docs/contract.md, "When an
# order counts").
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
