"""Campaign snapshots: the whole state as plain JSON values, for a quicker cold start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from domain.definition import CampaignDefinition
from domain.ledger import Closing, Commitment
from domain.outcomes import Reason

if TYPE_CHECKING:
    from domain.campaign import Campaign

# Bump when the shape below changes, and teach `restore` the old shape.
SNAPSHOT_FORMAT = 1


def snapshot_state(campaign: Campaign) -> dict[str, Any]:
    """What a snapshot stores; derived totals are left out and counted again on restore."""
    commitments = [
        [c.order_id, c.site_id, c.buyer_id, c.quantity, c.max_unit_price, c.withdrawn]
        for c in campaign.commitments.values()
    ]
    closing = campaign.closing
    return {
        "format": SNAPSHOT_FORMAT,
        "opened": campaign.definition.to_event_fields(),
        "created_on": campaign.created_on,
        "modified_on": campaign.modified_on,
        "deadline": campaign.deadline,
        "commitments": commitments,
        "rejected_orders": {k: v.value for k, v in campaign.rejected_orders.items()},
        "live_price": campaign._live_price,
        "committed": campaign._committed,
        "closing": closing.to_event_fields() if closing is not None else None,
    }


def restore(
    campaign_class: type[Campaign], aggregate_id: UUID, version: int, state: Mapping[str, Any]
) -> Campaign:
    """The campaign a snapshot state describes, as replaying its events would build it."""
    campaign = object.__new__(campaign_class)
    campaign.__base_init__(aggregate_id, version, state["created_on"])
    campaign.modified_on = state["modified_on"]
    campaign._start(CampaignDefinition.from_event_fields(state["opened"]))
    campaign.deadline = state["deadline"]
    for order_id, site_id, buyer_id, quantity, limit, withdrawn in state["commitments"]:
        campaign.commitments[order_id] = Commitment(
            order_id, site_id, buyer_id, quantity, limit, withdrawn
        )
        # Placing then withdrawing, as the events did, leaves the same totals behind.
        campaign._count(site_id, buyer_id, quantity, limit)
        if withdrawn:
            campaign._count(site_id, buyer_id, -quantity, limit)
    campaign.rejected_orders = {k: Reason(v) for k, v in state["rejected_orders"].items()}
    campaign._live_price, campaign._committed = state["live_price"], state["committed"]
    closing = state["closing"]
    campaign.closing = Closing.from_event(**closing) if closing is not None else None
    return campaign
