"""What if: the real orders and cancellations, at their real times, under another definition."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from analysis.errors import NoOpeningError
from analysis.fold import fold
from domain.campaign import Campaign
from domain.clearing import clear
from domain.definition import CampaignDefinition
from domain.errors import DefinitionError, Problem
from domain.money import round_money
from domain.outcomes import CloseOutcome, CloseReason, Order
from domain.timefmt import utc
from projections.wire import jsonable

# The fields a what-if may change; everything else stays as the campaign was opened.
CHANGEABLE = frozenset({"pricing", "floor_price", "minimum_quantity", "maximum_quantity"})


def alternative(real: CampaignDefinition, changes: Any) -> CampaignDefinition:
    """`real` with `changes` (a JSON object) applied, validated as a definition is.

    A bare price schedule (an object with a "kind") stands for {"pricing": schedule}.
    Raises DefinitionError naming each wrong field.
    """
    if isinstance(changes, Mapping) and "kind" in changes:
        changes = {"pricing": changes}
    if not isinstance(changes, Mapping) or not changes:
        expected = ", ".join(sorted(CHANGEABLE))
        raise DefinitionError([Problem("file", f"must be a JSON object with {expected}")])
    unknown = sorted(set(changes) - CHANGEABLE)
    if unknown:
        expected = ", ".join(sorted(CHANGEABLE))
        message = f"cannot be changed in a what-if; expected one of {expected}"
        raise DefinitionError([Problem(name, message) for name in unknown])
    return CampaignDefinition.from_json_dict(real.to_json_dict() | dict(changes))


def replay_under(events: Iterable[Any], definition: CampaignDefinition, now: datetime) -> Campaign:
    """A fresh campaign under `definition`, given every real command at its real time.

    Orders the real campaign rejected are placed too, and cancellations it refused are
    tried again: a higher cap or another schedule may decide them differently. When
    the real campaign has closed and this one has not (it did not sell out as the real
    one did), it closes at its deadline, if that has come by `now`.
    """
    campaign: Campaign | None = None
    real_closed = False
    for event in events:
        if isinstance(event, Campaign.Opened):
            # Not Campaign.open: its deadline may well be past by now.
            campaign = Campaign(**definition.to_event_fields(), timestamp=event.timestamp)
        elif campaign is None:
            raise NoOpeningError()
        else:
            real_closed |= isinstance(event, Campaign.Closed)
            _apply(campaign, event)
    if campaign is None:
        raise NoOpeningError()
    if real_closed and campaign.closing is None and campaign.deadline <= utc(now):
        campaign.close_if_due(campaign.deadline)
    return campaign


def _apply(campaign: Campaign, event: Any) -> None:
    at = event.timestamp
    if isinstance(event, Campaign.CommitmentPlaced | Campaign.OrderRejected):
        order = Order(
            event.order_id,
            event.site_id,
            event.buyer_id,
            event.quantity,
            event.max_unit_price,
            event.placed_at,
        )
        campaign.place_order(order, at)
    elif isinstance(event, Campaign.CommitmentWithdrawn | Campaign.CancellationRejected):
        campaign.cancel_order(event.order_id, event.site_id, at)
    elif isinstance(event, Campaign.DeadlineExtended):
        if campaign.closing is None:
            campaign.extend_deadline(event.deadline, at)
    elif isinstance(event, Campaign.Closed):
        _close_as_really_closed(campaign, CloseReason(event.reason), at)


def _close_as_really_closed(campaign: Campaign, reason: CloseReason, at: datetime) -> None:
    if reason is CloseReason.CANCELLED:
        if campaign.closing is None:
            campaign.cancel(at)
    elif reason is CloseReason.DEADLINE:
        campaign.close_if_due(at)
    # A real sell-out: this campaign sells out by its own orders, or runs to its deadline.


@dataclass(frozen=True)
class Result:
    """How a campaign ended; `revenue` and the buyer counts are None while it is open.

    A buyer (site and buyer id) counts as filled when any of their commitments was
    filled, and as released when they had commitments at the close and none was filled.
    """

    outcome: str
    reason: str | None
    unit_price: Decimal
    filled_quantity: int
    revenue: Decimal | None
    buyers_filled: int | None
    buyers_released: int | None
    closed_at: datetime | None

    def to_json_dict(self) -> dict[str, Any]:
        view: dict[str, Any] = jsonable(asdict(self))
        return view


def result_of(campaign: Campaign) -> Result:
    """The outcome of a campaign, or its live figures while it is open."""
    closing = campaign.closing
    if closing is None:
        filled = clear(campaign.pricing, campaign.demand).filled_quantity
        return Result("open", None, campaign.unit_price, filled, None, None, None, None)
    succeeded = closing.outcome is CloseOutcome.SUCCEEDED
    standing = [c for c in campaign.commitments.values() if not c.withdrawn]
    filled_buyers = {
        (c.site_id, c.buyer_id) for c in standing if succeeded and c.fills_at(closing.unit_price)
    }
    all_buyers = {(c.site_id, c.buyer_id) for c in standing}
    price, currency = closing.unit_price, campaign.definition.currency
    revenue = price * closing.filled_quantity if succeeded else Decimal(0)
    return Result(
        outcome=closing.outcome.value,
        reason=closing.reason.value,
        unit_price=price,
        filled_quantity=closing.filled_quantity,
        revenue=round_money(revenue, currency),
        buyers_filled=len(filled_buyers),
        buyers_released=len(all_buyers - filled_buyers),
        closed_at=closing.closed_at,
    )


@dataclass(frozen=True)
class Comparison:
    """The real outcome beside the what-if one, and the definition the what-if used."""

    campaign_id: str
    currency: str
    real: Result
    whatif: Result
    changes: dict[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "currency": self.currency,
            "changes": jsonable(self.changes),
            "real": self.real.to_json_dict(),
            "whatif": self.whatif.to_json_dict(),
        }


def compare(events: list[Any], changes: Any, now: datetime) -> Comparison:
    """Replays `events` as they happened and under `changes`; raises DefinitionError."""
    real = fold(events)
    if real is None:
        raise NoOpeningError()
    definition = alternative(real.definition, changes)
    whatif = replay_under(events, definition, now)
    changed = {
        name: value
        for name, value in definition.to_json_dict().items()
        if value != real.definition.to_json_dict()[name]
    }
    return Comparison(
        real.campaign_id, real.definition.currency, result_of(real), result_of(whatif), changed
    )
