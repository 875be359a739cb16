"""Domain events as `groupbuy.campaign-events.v1` messages, and back (docs/contract.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.campaign import Campaign
from domain.timefmt import within_contract_years

# Event class -> message type; the names consumers see, kept stable across refactorings.
MESSAGE_TYPES: dict[type[Any], str] = {
    Campaign.Opened: "campaign.opened",
    Campaign.CommitmentPlaced: "commitment.placed",
    Campaign.OrderRejected: "order.rejected",
    Campaign.CommitmentWithdrawn: "commitment.withdrawn",
    Campaign.CancellationRejected: "cancellation.rejected",
    Campaign.DeadlineExtended: "deadline.extended",
    Campaign.Closed: "campaign.closed",
}
# Stored with every event by the library; the message says them its own way.
_BOOKKEEPING = {"originator_id", "originator_version", "timestamp", "originator_topic"}


@dataclass(frozen=True)
class CampaignEvent:
    """A decoded message: its identity (`campaign_id`, `version`) and its fields."""

    type: str
    campaign_id: str
    version: int
    occurred_at: datetime
    fields: dict[str, Any]


def encode(event: Any, campaign_id: str) -> bytes:
    """The message for a stored domain event of campaign `campaign_id`.

    Total over what the event classes hold, even events stored before the contract's field
    limits: an instant is written in UTC where it has a UTC form (`rfc3339`), and an order's
    `placed_at`, which is only informational, as null outside the contract's years.
    """
    state = {k: v for k, v in vars(event).items() if k not in _BOOKKEEPING}
    if "placed_at" in state:
        state["placed_at"] = informational(state["placed_at"])
    message = {
        "type": MESSAGE_TYPES[type(event)],
        "campaign_id": campaign_id,
        "version": event.originator_version,
        "occurred_at": rfc3339(event.timestamp),
    } | {name: jsonable(value) for name, value in state.items() if name != "campaign_id"}
    return json.dumps(message, separators=(",", ":")).encode()


def decode(value: bytes) -> CampaignEvent:
    """A message back into its parts; money stays exact."""
    fields = json.loads(value, parse_float=Decimal)
    return CampaignEvent(
        type=fields.pop("type"),
        campaign_id=fields.pop("campaign_id"),
        version=int(fields.pop("version")),
        occurred_at=datetime.fromisoformat(fields.pop("occurred_at")),
        fields=fields,
    )


def rfc3339(instant: datetime) -> str:
    """The instant in UTC, ending in Z.

    One within hours of datetime's range (year 1 at +14:00, year 9999 at -14:00) has no UTC
    form there: it keeps its own offset, the same instant and still RFC 3339.
    """
    try:
        return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return instant.isoformat()


def informational(instant: datetime | None) -> datetime | None:
    """A site's own instant as messages carry it: None unless within the contract's years
    (the limit that now drops it at ingestion; earlier events may hold any)."""
    if isinstance(instant, datetime) and instant.utcoffset() is not None:
        return instant if within_contract_years(instant) else None
    return None


def jsonable(value: Any) -> Any:
    """Money as decimal strings and instants as RFC 3339, inside any structure."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
