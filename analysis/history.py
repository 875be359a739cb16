"""A campaign as it stood at a past instant, from its events up to that instant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from analysis.errors import NotYetOpenedError
from analysis.fold import fold
from domain.campaign import Campaign
from domain.clearing import clear
from domain.timefmt import format_instant, utc
from projections.next_price import next_step
from projections.wire import jsonable


@dataclass(frozen=True)
class StateAt:
    """The figures the live read model showed at `at` (and a note where they need one)."""

    campaign_id: str
    at: datetime
    version: int
    last_event_at: datetime
    status: str
    note: str | None
    currency: str
    unit_price: Decimal
    committed_quantity: int
    filled_quantity: int
    buyers: int
    next_unit_price: Decimal | None
    units_to_next_price: int | None
    minimum_quantity: int
    maximum_quantity: int | None
    deadline: datetime
    closed_at: datetime | None
    close_reason: str | None

    def to_json_dict(self) -> dict[str, Any]:
        """Money as decimal strings and instants as RFC 3339, as the contract writes them."""
        view: dict[str, Any] = jsonable(asdict(self))
        return view


def state_at(campaign_id: str, events: Sequence[Any], at: datetime) -> StateAt:
    """The campaign after every event up to `at`; raises if it was not open yet."""
    at = utc(at, "at")
    campaign = fold(events, until=at)
    if campaign is None:
        raise NotYetOpenedError(campaign_id, at, events[0].timestamp)
    return _describe(campaign, at)


def _describe(campaign: Campaign, at: datetime) -> StateAt:
    closing, definition = campaign.closing, campaign.definition
    demand = campaign.demand
    filled = closing.filled_quantity if closing else clear(campaign.pricing, demand).filled_quantity
    step = None if closing else next_step(campaign.pricing, filled)
    return StateAt(
        campaign_id=campaign.campaign_id,
        at=at,
        version=campaign.version,
        last_event_at=campaign.modified_on,
        status=closing.outcome.value if closing else "open",
        note=_note(campaign, at),
        currency=definition.currency,
        unit_price=campaign.unit_price,
        # Units committed and not withdrawn; a close settles them but does not take them back.
        committed_quantity=demand.unconditional + sum(demand.conditional.values()),
        filled_quantity=filled,
        buyers=campaign.buyers,
        next_unit_price=step[0] if step else None,
        units_to_next_price=step[1] if step else None,
        minimum_quantity=definition.minimum_quantity,
        maximum_quantity=definition.maximum_quantity,
        deadline=campaign.deadline,
        closed_at=closing.closed_at if closing else None,
        close_reason=closing.reason.value if closing else None,
    )


def _note(campaign: Campaign, at: datetime) -> str | None:
    if campaign.closing is None and at >= campaign.deadline:
        return (
            f"past its deadline ({format_instant(campaign.deadline)}) but not closed yet: "
            "the clock closes it once ingestion has caught up with the deadline"
        )
    return None
