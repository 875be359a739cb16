"""GroupBuying: the application service that loads campaigns, runs commands and saves events."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import IntegrityError

from domain.campaign import Campaign
from domain.definition import CampaignDefinition
from domain.errors import CampaignError, CampaignExistsError, UnknownCampaignError
from domain.outcomes import Order, Outcome

if TYPE_CHECKING:
    from eventsourcing.persistence import ProcessRecorder, Recording, Tracking

T = TypeVar("T")


class GroupBuying(Application[UUID]):
    """Campaign commands with the time passed in, so that runs and replays are deterministic.

    Campaigns stay in an aggregate cache, used in place: a hot campaign with 100,000
    commitments must not be copied or replayed for every command. A write from another
    process makes the next save here fail on the version; the campaign is then reloaded
    (and a single command decided again). One thread per campaign: Kafka's partition
    ownership gives that to ingestion; other threads need their own GroupBuying.
    """

    env: ClassVar[dict[str, str]] = {
        "AGGREGATE_CACHE_MAXSIZE": "500",
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
    }
    recorder: ProcessRecorder

    def construct_recorder(self) -> ProcessRecorder:
        # A process recorder can store a Kafka position in the transaction of the events.
        return self.factory.process_recorder()

    def open_campaign(self, definition: CampaignDefinition, now: datetime) -> UUID:
        """Opens a campaign; opening the same definition again changes nothing."""
        try:
            existing = self.get_campaign(definition.campaign_id)
        except UnknownCampaignError:
            campaign = Campaign.open(definition, now)
            self.save(campaign)
            return campaign.id
        if existing.definition != definition:
            raise CampaignExistsError(definition.campaign_id)
        return existing.id

    def place_order(self, campaign_id: str, order: Order, now: datetime) -> Outcome:
        """Places an order at `now`, the time the order reached Kafka."""
        return self._run(campaign_id, lambda campaign: campaign.place_order(order, now))

    def cancel_order(self, campaign_id: str, order_id: str, site_id: str, now: datetime) -> Outcome:
        """Withdraws a site's order at `now`, the time the cancellation reached Kafka."""
        return self._run(campaign_id, lambda c: c.cancel_order(order_id, site_id, now))

    def extend_deadline(self, campaign_id: str, deadline: datetime, now: datetime) -> None:
        """Moves an open campaign's deadline later."""
        self._run(campaign_id, lambda campaign: campaign.extend_deadline(deadline, now))

    def cancel_campaign(self, campaign_id: str, now: datetime) -> None:
        """Calls a campaign off; every commitment is released."""
        self._run(campaign_id, lambda campaign: campaign.cancel(now))

    def close_if_due(self, campaign_id: str, now: datetime) -> bool:
        """Closes a campaign whose deadline has come; says whether it closed now."""
        return self._run(campaign_id, lambda campaign: campaign.close_if_due(now))

    def get_campaign(self, campaign_id: str) -> Campaign:
        """The campaign as stored, from the cache: save what you change, or `forget` it."""
        aggregate_id = Campaign.create_id(campaign_id)
        try:
            campaign: Campaign = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise UnknownCampaignError(campaign_id) from None
        if campaign.pending_events:
            # Changed in place but never saved: the store, not this object, is the truth.
            self.forget(campaign_id)
            campaign = self.repository.get(aggregate_id)
        return campaign

    def forget(self, campaign_id: str) -> None:
        """Drops a cached campaign, so that the next command reloads it from the store."""
        self._evict(Campaign.create_id(campaign_id))

    def find_campaign(self, campaign_id: str) -> Campaign | None:
        """Like `get_campaign`, but None when there is no such campaign."""
        try:
            return self.get_campaign(campaign_id)
        except UnknownCampaignError:
            return None

    def save_with_tracking(
        self, campaigns: Iterable[Campaign], tracking: Tracking | None, **kwargs: Any
    ) -> list[Recording[UUID]]:
        """Saves the new events of several campaigns and a Kafka position in one transaction.

        `tracking` is Tracking(application_name="topic:partition", notification_id=offset);
        `kwargs` go to the recorder with the events. If this raises (IntegrityError when the
        offset was already stored, or a campaign was written elsewhere), nothing was saved
        and the campaigns are reloaded on next use: decide again.
        """
        processing = ProcessingEvent[UUID](tracking=tracking)
        processing.collect_events(*campaigns, **kwargs)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        return recordings

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last offset saved for "topic:partition", where a consumer resumes after."""
        return self.recorder.max_tracking_id(application_name)

    def _run(self, campaign_id: str, command: Callable[[Campaign], T]) -> T:
        try:
            return self._run_once(campaign_id, command)
        except IntegrityError:
            # Written elsewhere since we cached it: decide once more on the stored state.
            return self._run_once(campaign_id, command)

    def _run_once(self, campaign_id: str, command: Callable[[Campaign], T]) -> T:
        campaign = self.get_campaign(campaign_id)
        try:
            result = command(campaign)
        except CampaignError:
            # A refused command records nothing, so the cached campaign is still good.
            if campaign.pending_events:
                self.forget(campaign_id)
            raise
        except BaseException:
            self.forget(campaign_id)
            raise
        self.save(campaign)
        return result

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        # Every save passes here. Cached campaigns were changed in place, so when their
        # events are not stored the cached objects are wrong: drop them.
        try:
            return super()._record(processing_event)
        except BaseException:
            for aggregate_id in processing_event.aggregates:
                self._evict(aggregate_id)
            raise

    def _evict(self, aggregate_id: UUID) -> None:
        if self.repository.cache is not None:
            with suppress(KeyError):
                self.repository.cache.get(aggregate_id, evict=True)
