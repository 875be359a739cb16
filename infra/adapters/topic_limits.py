"""What each topic a service writes to takes, and whether it is there to take anything."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from infra.adapters import kafka_clients
from infra.adapters.topics import Topics
from infra.settings import Settings

log = logging.getLogger(__name__)
LIMIT = "max.message.bytes"
LIST_EVERY = 1.0  # seconds: the topics are listed again at most this often
UNREGISTERED_FOR = 30.0  # seconds a site found unregistered is taken to be so, unasked


class TopicLimits:
    """The largest record batch each topic takes (`max.message.bytes`), asked of the brokers
    once per topic: a topic made before groupbuy set its limit, or by hand, may take less.

    A topic that does not exist is made first, with groupbuy's settings (a send to it would
    wait for it, then fail, for ever), unless it is a site's and the site has no orders
    topic: a site that was never registered has nowhere to read from, and sent no order
    through Kafka. Its results and buyer settlements are then not sent (`of` says None), and
    its commitments stay in the event store and on the campaign-events topic. Making its
    topics instead would make one set of topics for every site id a campaign ever held.

    One per service, shared by its threads; `close` it at the end.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.known: dict[str, int] = {}
        self.existing: set[str] = set()
        self.listed_at = -LIST_EVERY
        self.unregistered: dict[str, float] = {}  # a site's topic -> when found so
        self.lock = threading.Lock()  # the relay's two publishers share it
        self.client: KafkaAdminClient | None = None

    def of(self, topic: str) -> int | None:
        """The limit of `topic`, made if it is missing; None for an unregistered site's."""
        with self.lock:
            if topic in self.known:
                return self.known[topic]
            found = self.unregistered.get(topic)
            if found is not None and time.monotonic() - found < UNREGISTERED_FOR:
                return None
            if not self._exists(topic):
                if not self._ours_to_make(topic):
                    return None
                kafka_clients.create_topics(self._admin(), self.topics, [topic])
                self.existing.add(topic)
                log.warning("made the missing topic %s", topic)
            described = self._described(topic)
            if described is None:  # made, but not described yet: what groupbuy made it with
                return self.topics.max_message_bytes(topic)
            self.known[topic] = described
            return described

    def close(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.close()
                self.client = None

    def _exists(self, topic: str) -> bool:
        if topic not in self.existing and time.monotonic() - self.listed_at >= LIST_EVERY:
            self.existing = set(self._admin().list_topics())
            self.listed_at = time.monotonic()
        return topic in self.existing

    def _ours_to_make(self, topic: str) -> bool:
        site = self.topics.site_of(topic)
        if site is None or self._exists(self.topics.site_orders(site)):
            self.unregistered.pop(topic, None)
            return True
        if topic not in self.unregistered:
            log.warning("%s: site %s has no orders topic (unregistered): not sent", topic, site)
        self.unregistered[topic] = time.monotonic()
        return False

    def _described(self, topic: str) -> int | None:
        wanted = ConfigResource(ConfigResourceType.TOPIC, topic, configs={LIMIT: None})
        described: Any = self._admin().describe_configs([wanted], config_filter="all")
        entry = described.get("topic", {}).get(topic, {}).get(LIMIT)
        return None if entry is None else int(entry["value"])

    def _admin(self) -> KafkaAdminClient:
        if self.client is None:
            self.client = kafka_clients.admin(self.settings)
        return self.client
