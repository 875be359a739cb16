"""Order ingestion: a poll's records become campaign commands, results and DLQ copies."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from consumers.batch import FencedTracking, OutboxMessage, Record
from consumers.order_messages import MalformedMessageError, OrderMessage, PlaceOrder, decode
from consumers.order_results import dead_letter, order_result
from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.outcomes import Outcome

log = logging.getLogger(__name__)

LoadCampaign = Callable[[str], Campaign | None]


@dataclass
class IngestBatch:
    """What one poll produced: to be saved together, in one transaction.

    An order whose command recorded an event is answered by that event (the relay turns it
    into the result); `outbox` holds only the other results and the dead letters.
    """

    campaigns: dict[str, Campaign] = field(default_factory=dict)
    outbox: list[OutboxMessage] = field(default_factory=list)
    last_offsets: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OrderIngestion:
    load: LoadCampaign
    results_topic: str
    dlq_topic: str

    def apply(self, records: Iterable[Record]) -> IngestBatch:
        batch = IngestBatch()
        appended_ms, now = -1, datetime.min
        topic, partition, name = "", -1, ""
        for record in records:
            if record.partition != partition or record.topic != topic:  # polls come by partition
                topic, partition, name = record.topic, record.partition, record.position_name
            batch.last_offsets[name] = record.offset
            if record.timestamp_ms != appended_ms:  # one producer batch, one append time
                appended_ms, now = record.timestamp_ms, record.appended_at
            message = self._handle(batch, record, now)
            if message is not None:
                batch.outbox.append(message)
        return batch

    def _handle(self, batch: IngestBatch, record: Record, now: datetime) -> OutboxMessage | None:
        try:
            command = decode(record.value)
        except MalformedMessageError as error:
            return dead_letter(self.dlq_topic, record, str(error))
        try:
            outcome = self._apply(batch, command, now)
        except Exception as error:  # a bug must not stop ingestion: park the message
            log.exception("order at %s@%d failed", record.position_name, record.offset)
            return dead_letter(self.dlq_topic, record, f"internal error: {error!r}")
        if outcome is not None and outcome.recorded:
            return None
        return order_result(self.results_topic, command, outcome)

    def _apply(self, batch: IngestBatch, command: OrderMessage, now: datetime) -> Outcome | None:
        """`now` is the broker's append time: it decides whether an order came in time
        (docs/contract.md, "When an order counts")."""
        campaign = batch.campaigns.get(command.campaign_id) or self.load(command.campaign_id)
        if campaign is None:
            return None
        batch.campaigns[command.campaign_id] = campaign
        if isinstance(command, PlaceOrder):
            return campaign.place_order(command, now)
        return campaign.cancel_order(command.order_id, command.site_id, now)


class IngestSink:
    """Applies a poll's orders and saves events, results and positions in one transaction."""

    def __init__(self, app: GroupBuying, results_topic: str, dlq_topic: str) -> None:
        self.app = app
        self.ingestion = OrderIngestion(self._load, results_topic, dlq_topic)
        self.cached: set[str] = set()

    def stored_positions(self, names: Sequence[str]) -> dict[str, int | None]:
        return {name: self.app.max_tracking_id(name) for name in names}

    def process(self, records: Sequence[Record], expected: dict[str, int | None]) -> None:
        batch = self.ingestion.apply(records)
        positions = [
            FencedTracking(name, offset, expected=expected.get(name))
            for name, offset in batch.last_offsets.items()
        ]
        self.app.save_with_tracking(
            batch.campaigns.values(), None, positions=positions, outbox=batch.outbox
        )

    def forget(self) -> None:
        # After a rebalance another process may have written these campaigns.
        for campaign_id in self.cached:
            self.app.forget(campaign_id)
        self.cached.clear()

    def _load(self, campaign_id: str) -> Campaign | None:
        self.cached.add(campaign_id)
        return self.app.find_campaign(campaign_id)
