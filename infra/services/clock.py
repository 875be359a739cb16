"""`groupbuy clock`: closes each campaign at its deadline, once ingestion has caught up to it."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from eventsourcing.utils import get_topic
from kafka import KafkaConsumer, TopicPartition

from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.errors import CampaignError
from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.settings import Settings

log = logging.getLogger(__name__)
TICK = 0.2  # seconds: a deadline is acted on within this much of being due and ingested
SCHEDULE_EVENTS = [
    get_topic(e) for e in (Campaign.Opened, Campaign.DeadlineExtended, Campaign.Closed)
]


class Deadlines:
    """The open campaigns and their deadlines, followed from the event store's log."""

    def __init__(self, app: GroupBuying) -> None:
        self.app = app
        self.position = 0
        self.open: dict[str, datetime] = {}
        self.ids: dict[str, str] = {}  # aggregate id -> campaign slug

    def catch_up(self) -> None:
        while notifications := self.app.recorder.select_notifications(
            self.position, 1000, topics=SCHEDULE_EVENTS, inclusive_of_start=False
        ):
            for notification in notifications:
                self._apply(self.app.mapper.to_domain_event(notification))
            self.position = notifications[-1].id

    def due(self, now: datetime) -> list[tuple[str, datetime]]:
        return sorted(((c, d) for c, d in self.open.items() if d <= now), key=lambda cd: cd[1])

    def _apply(self, event: object) -> None:
        if isinstance(event, Campaign.Opened):
            self.ids[str(event.originator_id)] = event.campaign_id
            self.open[event.campaign_id] = event.deadline
        elif isinstance(event, Campaign.DeadlineExtended):
            self.open[self.ids[str(event.originator_id)]] = event.deadline
        elif isinstance(event, Campaign.Closed):
            self.open.pop(self.ids[str(event.originator_id)], None)


class IngestProgress:
    """Whether ingestion has applied every order appended before an instant (docs/contract.md)."""

    def __init__(self, app: GroupBuying, consumer: KafkaConsumer, orders_topic: str) -> None:
        self.app = app
        self.consumer = consumer
        self.topic = orders_topic

    def is_past(self, deadline: datetime) -> bool:
        partitions = [
            TopicPartition(self.topic, p)
            for p in sorted(self.consumer.partitions_for_topic(self.topic) or ())
        ]
        if not partitions:
            return True
        millis = int(deadline.timestamp() * 1000)
        first_late = self.consumer.offsets_for_times({tp: millis for tp in partitions})
        ends = self.consumer.end_offsets(partitions)
        for tp in partitions:
            late = first_late.get(tp)
            # Everything before the first record appended at or after the deadline, or else
            # everything there is now (read after the deadline), must be applied.
            needed = late.offset if late is not None else ends[tp]
            applied = self.app.max_tracking_id(f"{self.topic}:{tp.partition}")
            if (-1 if applied is None else applied) + 1 < needed:
                return False
        return True


def run_clock(settings: Settings, stop: threading.Event) -> None:
    app = open_app(settings)
    consumer = kafka_clients.reader(settings)
    deadlines = Deadlines(app)
    progress = IngestProgress(app, consumer, Topics(settings.topic_prefix).orders)
    try:
        while not stop.is_set():
            deadlines.catch_up()
            close_due(app, deadlines, progress, datetime.now(UTC))
            stop.wait(TICK)
    finally:
        consumer.close()
        app.close()


def close_due(
    app: GroupBuying, deadlines: Deadlines, progress: IngestProgress, now: datetime
) -> int:
    """Close every due campaign whose orders are all in; the number closed here."""
    closed, ready = 0, {}
    for campaign_id, deadline in deadlines.due(now):
        if deadline not in ready:  # campaigns often share a deadline: ask Kafka once
            ready[deadline] = progress.is_past(deadline)
        if not ready[deadline]:
            continue
        try:
            # Another clock may have closed it first: then this records nothing. The event
            # records when this close happened, not when the tick began.
            closed += app.close_if_due(campaign_id, datetime.now(UTC))
        except CampaignError as error:
            log.warning("cannot close %s: %s", campaign_id, error)
        deadlines.open.pop(campaign_id, None)
    return closed
