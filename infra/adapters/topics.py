"""The Kafka topics of docs/contract.md: their names under the prefix, and their settings."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from domain.text import SLUG

# Orders are timed by the broker, so no site can backdate one (docs/contract.md, "When an
# order counts").
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}

COMPACTED = {"cleanup.policy": "compact"}
# The relay's publishers, each with a partition of the relay's progress topic of its own.
RELAY_PUBLISHERS = 2

MiB = 1024 * 1024
# The largest record batch each topic takes (Kafka's `max.message.bytes`, set when groupbuy
# creates it); a producer asks no more of a topic than that (`kafka_clients`). A
# campaign.closed carries a line of at most 101 bytes per site (a 64-character slug, a
# 10-digit quantity): 10,000 sites take about 1 MB, and 8 MiB holds some 80,000.
EVENT_MAX_BYTES = 8 * MiB
# A purchase order carries its campaign.closed's lines, byte for byte, and fields of its own
# (under 2 KiB within the field limits): whatever campaign-events took, this takes.
SETTLEMENT_MAX_BYTES = EVENT_MAX_BYTES + MiB
# The relay's progress lists up to 2,000 rows and the errors of those parked (2,000
# characters each at most): it fits in what campaign-events takes.
ORDER_MAX_BYTES = MiB  # a site's record; ingestion reads at most 64 KiB of it as an order
# A dead letter is an orders record byte for byte, with headers saying why it is one.
DEAD_LETTER_MAX_BYTES = ORDER_MAX_BYTES + MiB
MESSAGE_MAX_BYTES = MiB  # the rest: one order's result, one commitment's settlement


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    @property
    def orders_dlq(self) -> str:
        return self.prefix + "groupbuy.orders.dlq.v1"

    @property
    def campaign_events(self) -> str:
        return self.prefix + "groupbuy.campaign-events.v1"

    @property
    def clock(self) -> str:
        """The clock's own topic: the append time the broker gives its records is the
        broker's time (infra/services/clock.py)."""
        return self.prefix + "groupbuy.clock.v1"

    @property
    def relay_progress(self) -> str:
        """The relay's own topic: how far each of its Kafka transactions got, committed with
        the messages it published (infra/services/relay.py). Compacted: its last record per
        publisher is all that is ever read."""
        return self.prefix + "groupbuy.relay-progress.v1"

    def site_orders(self, site_id: str) -> str:
        """Site `site_id`'s own orders topic (docs/contract.md, "Tenants")."""
        return f"{self.prefix}groupbuy.orders.{site_id}.v1"

    def site_results(self, site_id: str) -> str:
        return f"{self.prefix}groupbuy.order-results.{site_id}.v1"

    def site_buyer_settlements(self, site_id: str) -> str:
        return f"{self.prefix}groupbuy.buyer-settlements.{site_id}.v1"

    def site_topics(self, site_id: str) -> list[str]:
        return [
            self.site_orders(site_id),
            self.site_results(site_id),
            self.site_buyer_settlements(site_id),
        ]

    def settlements(self, supplier_id: str) -> str:
        return f"{self.prefix}groupbuy.settlements.{supplier_id}.v1"

    @property
    def orders_pattern(self) -> str:
        """The regular expression every site's orders topic, and no other topic, matches:
        what ingestion subscribes to, so that a new site's topic is followed at once."""
        return rf"^{re.escape(self.prefix)}groupbuy\.orders\.(?!dlq\.v1$)({SLUG})\.v1$"

    def site_of_orders(self, name: str) -> str | None:
        """The site whose orders topic `name` is; None if it is no site's orders topic."""
        matched = re.fullmatch(self.orders_pattern, name)
        return None if matched is None else matched.group(1)

    def site_of(self, name: str) -> str | None:
        """The site whose orders, results or buyer-settlements topic `name` is; None if it is
        none of a site's."""
        if (site := self.site_of_orders(name)) is not None:
            return site
        kinds = r"order-results|buyer-settlements"
        matched = re.fullmatch(
            rf"{re.escape(self.prefix)}groupbuy\.(?:{kinds})\.({SLUG})\.v1", name
        )
        return None if matched is None else matched.group(1)

    def partitions(self, name: str) -> int:
        """How many partitions topic `name` is created with: one per relay publisher for the
        relay's progress, GROUPBUY_TOPIC_PARTITIONS for the rest."""
        return RELAY_PUBLISHERS if name == self.relay_progress else partitions_from_env()

    def max_message_bytes(self, name: str) -> int:
        """The largest record batch topic `name` takes."""
        if name in (self.campaign_events, self.relay_progress):
            return EVENT_MAX_BYTES
        if name.startswith(f"{self.prefix}groupbuy.settlements."):
            return SETTLEMENT_MAX_BYTES
        if name == self.orders_dlq:
            return DEAD_LETTER_MAX_BYTES
        return ORDER_MAX_BYTES if self.is_site_orders(name) else MESSAGE_MAX_BYTES

    def configs(self, name: str) -> dict[str, str]:
        """The settings topic `name` is created with: its message size, and for the orders and
        clock topics the broker's append time."""
        configs = {"max.message.bytes": str(self.max_message_bytes(name))}
        if name == self.relay_progress:
            return configs | COMPACTED
        timed = name == self.clock or self.is_site_orders(name)
        return configs | APPEND_TIME if timed else configs

    def is_site_orders(self, name: str) -> bool:
        """Whether `name` is a site's own orders topic (`groupbuy.orders.<site_id>.v1`)."""
        return self.site_of_orders(name) is not None


def replication_from_env(brokers: int) -> int:
    """`GROUPBUY_TOPIC_REPLICATION`: on how many brokers each partition of a topic groupbuy
    creates is kept; by default 3 on a cluster of three brokers or more, else 1."""
    raw = os.environ.get("GROUPBUY_TOPIC_REPLICATION", "").strip()
    if not raw:
        return 3 if brokers >= 3 else 1
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"GROUPBUY_TOPIC_REPLICATION must be a whole number >= 1, got {raw!r}")
    if int(raw) > brokers:
        raise ValueError(
            f"GROUPBUY_TOPIC_REPLICATION is {raw}, but the Kafka cluster has {brokers} "
            f"broker{'s' if brokers > 1 else ''}: a partition cannot have more replicas"
        )
    return int(raw)


def durability(replication: int) -> dict[str, str]:
    """A topic's settings for `replication` replicas: with three or more, a write with
    `acks=all` counts once two replicas hold it, so one broker may be lost without losing
    an acknowledged record or refusing new ones."""
    return {"min.insync.replicas": "2" if replication >= 3 else "1"}


def partitions_from_env() -> int:
    raw = os.environ.get("GROUPBUY_TOPIC_PARTITIONS", "8")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"GROUPBUY_TOPIC_PARTITIONS must be a whole number >= 1, got {raw!r}")
    return int(raw)
