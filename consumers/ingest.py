"""Order ingestion: a poll's records become campaign commands, results and DLQ copies."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import psycopg
from eventsourcing.persistence import PersistenceError

from consumers.batch import DependencyError, FencedTracking, OutboxMessage, Record, RecordError
from consumers.order_messages import (
    CancelOrder,
    MalformedMessageError,
    OrderMessage,
    PlaceOrder,
    decode,
)
from consumers.order_results import dead_letter, mismatch_result, order_result
from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.outcomes import Outcome, Reason

log = logging.getLogger(__name__)

LoadCampaign = Callable[[str], Campaign | None]
# What loading a campaign raises when the database, not the order, is at fault.
LOAD_FAILURES = (PersistenceError, psycopg.Error, OSError, MemoryError)


class CampaignLoadError(DependencyError):
    """The event store could not load a campaign: the whole batch is applied again later.

    Never a dead letter: the order is most likely valid, and the DLQ would lose it.
    """


class HalfAppliedError(RecordError):
    """A command failed after it had recorded an event in its campaign.

    The campaign in memory then holds part of an order that will be a dead letter, so the
    batch cannot be saved as it is: the loop saves the records around this one without it.
    """


@dataclass
class IngestBatch:
    """What one poll produced: to be saved together, in one transaction.

    An order whose command recorded an event is answered by that event (the relay turns it
    into the result); `outbox` holds only the other results and the dead letters.
    """

    campaigns: dict[str, Campaign] = field(default_factory=dict)
    outbox: list[OutboxMessage] = field(default_factory=list)
    last_offsets: dict[str, int] = field(default_factory=dict)
    # For the metrics, once saved: (kind, outcome, reason) of each order and cancellation,
    # and the cause of each dead letter.
    tally: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)

    def count(self, command: OrderMessage, outcome: Outcome | None, reason: str = "") -> None:
        kind = "cancellation" if isinstance(command, CancelOrder) else "order"
        if outcome is None:
            self.tally[kind, "rejected", reason] += 1
        elif outcome.duplicate:
            self.tally[kind, "duplicate", ""] += 1
        else:
            why = outcome.reason.value if outcome.reason is not None else ""
            self.tally[kind, outcome.verdict.value, why] += 1


class SiteTopics(Protocol):
    """The topic names ingestion reads and writes (infra/adapters/topics.py)."""

    @property
    def orders_dlq(self) -> str: ...

    def site_of_orders(self, name: str) -> str | None: ...

    def site_results(self, site_id: str) -> str: ...


@dataclass(frozen=True)
class OrderIngestion:
    """Each site's orders, from its own topic: the topic says whose they are, whatever a
    message says, and the site's results go to its own results topic."""

    load: LoadCampaign
    topics: SiteTopics

    def apply(self, records: Iterable[Record]) -> IngestBatch:
        """Every record becomes a result or a dead letter, whatever it holds.

        Raises CampaignLoadError when the database failed (apply the batch again later), and
        HalfAppliedError when a record cannot be set aside without saving around it.
        """
        batch = IngestBatch()
        appended_ms, now = -1, datetime.min
        topic, partition, name, site = "", -1, "", None
        for record in records:
            if record.partition != partition or record.topic != topic:  # polls come by partition
                topic, partition, name = record.topic, record.partition, record.position_name
                site = self.topics.site_of_orders(topic)
            batch.last_offsets[name] = record.offset
            if record.timestamp_ms != appended_ms:  # one producer batch, one append time
                appended_ms, now = record.timestamp_ms, record.appended_at
            message = self._handle(batch, record, site, now)
            if message is not None:
                batch.outbox.append(message)
        return batch

    def _handle(
        self, batch: IngestBatch, record: Record, site: str | None, now: datetime
    ) -> OutboxMessage | None:
        command = None
        try:
            if site is None:  # subscribed to sites' topics only: a bug, or a topic by hand
                raise MalformedMessageError(f"{record.topic} is no site's orders topic")
            command = decode(record.value, site)
            results = self.topics.site_results(site)
            if command.site_id != site:
                batch.count(command, None, Reason.SITE_MISMATCH.value)
                return mismatch_result(results, command)
            _check_storable(command)
            outcome = self._apply(batch, command, now)
            batch.count(command, outcome, Reason.UNKNOWN_CAMPAIGN.value)
            if outcome is not None and outcome.recorded:
                return None
            return order_result(results, command, outcome)
        except MalformedMessageError as error:
            batch.dead_letters["malformed"] += 1
            return dead_letter(self.topics.orders_dlq, record, str(error))
        except (DependencyError, MemoryError):
            raise  # not this record's doing: the whole batch again, later
        except Exception as error:  # a bug must not stop ingestion: park the message
            if command is not None and _recorded_for(batch, command):
                raise HalfAppliedError(record, f"internal error: {error!r}") from error
            log.exception("order at %s@%d failed", record.position_name, record.offset)
            batch.dead_letters["internal"] += 1
            return dead_letter(self.topics.orders_dlq, record, f"internal error: {error!r}")

    def _apply(self, batch: IngestBatch, command: OrderMessage, now: datetime) -> Outcome | None:
        """`now` is the broker's append time: it decides whether an order came in time
        (docs/contract.md, "When an order counts")."""
        campaign = batch.campaigns.get(command.campaign_id) or self._load(command.campaign_id)
        if campaign is None:
            return None
        batch.campaigns[command.campaign_id] = campaign
        if command.problem is not None:  # readable, but past a field limit: never stored
            return campaign.answer_invalid(command.order_id)
        if isinstance(command, PlaceOrder):
            return campaign.place_order(command, now)
        return campaign.cancel_order(command.order_id, command.site_id, now)

    def _load(self, campaign_id: str) -> Campaign | None:
        try:
            return self.load(campaign_id)
        except LOAD_FAILURES as error:
            raise CampaignLoadError(f"cannot load campaign {campaign_id!r}: {error!r}") from error


def _check_storable(command: OrderMessage) -> None:
    """Refuse ids that UTF-8 cannot hold (a lone surrogate, which a JSON escape can carry).

    They would fail only when the batch is saved (the event store, a result's key), for
    the whole batch; here they fail for their own record. ASCII ids, nearly all, pass in
    four quick looks.
    """
    if (
        command.order_id.isascii()
        and command.site_id.isascii()
        and command.campaign_id.isascii()
        and (isinstance(command, CancelOrder) or command.buyer_id.isascii())
    ):
        return
    if command.problem is not None:
        return  # answered `invalid` without reaching the campaign: nothing of it is stored
    for name in ("order_id", "site_id", "campaign_id", "buyer_id"):
        value = getattr(command, name, "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise MalformedMessageError(
                f"field {name!r} is not valid Unicode: {error.reason} at character {error.start}"
            ) from None


def _recorded_for(batch: IngestBatch, command: OrderMessage) -> bool:
    """Whether the campaign holds an unsaved event of this order (from this command, or
    from an earlier record of the same order in the batch: either way, saving around the
    record is safe)."""
    campaign = batch.campaigns.get(command.campaign_id)
    if campaign is None:
        return False
    return any(
        getattr(event, "order_id", None) == command.order_id for event in campaign.pending_events
    )


class IngestObserver(Protocol):
    """Told of each batch once it is saved, and of each record set aside (the metrics,
    infra/adapters/metrics.py; a batch's size and time are TrackedLoop's `saved` hook)."""

    def saved(self, batch: IngestBatch) -> None: ...

    def parked(self) -> None: ...


class Unobserved:
    def saved(self, batch: IngestBatch) -> None:
        pass

    def parked(self) -> None:
        pass


class IngestSink:
    """Applies a poll's orders and saves events, results and positions in one transaction."""

    def __init__(
        self, app: GroupBuying, topics: SiteTopics, observer: IngestObserver | None = None
    ) -> None:
        self.app = app
        self.observer = observer or Unobserved()
        self.ingestion = OrderIngestion(self._load, topics)
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
        self.observer.saved(batch)

    def park(self, record: Record, reason: str, expected: dict[str, int | None]) -> None:
        """Save `record` as a dead letter saying `reason`, with its position, and nothing
        else: what its batch did without it is saved apart."""
        name = record.position_name
        position = FencedTracking(name, record.offset, expected=expected.get(name))
        letter = dead_letter(self.ingestion.topics.orders_dlq, record, reason)
        self.app.save_with_tracking((), None, positions=[position], outbox=[letter])
        self.observer.parked()

    def forget(self) -> None:
        # After a rebalance another process may have written these campaigns.
        for campaign_id in self.cached:
            self.app.forget(campaign_id)
        self.cached.clear()

    def _load(self, campaign_id: str) -> Campaign | None:
        self.cached.add(campaign_id)
        return self.app.find_campaign(campaign_id)
