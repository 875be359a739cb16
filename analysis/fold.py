"""Folds stored campaign events into a Campaign, as the repository does, up to an instant."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from analysis.errors import NoOpeningError
from domain.campaign import Campaign


def fold(events: Iterable[Any], until: datetime | None = None) -> Campaign | None:
    """The campaign after its events in stored order, stopping at the first later than `until`.

    Stopping at the first later event (rather than skipping it) keeps the result a state
    the campaign really had, even where stored order and timestamps disagree.
    None when no event is that early.
    """
    campaign: Campaign | None = None
    for event in events:
        if until is not None and event.timestamp > until:
            break
        if campaign is None and not isinstance(event, Campaign.Opened):
            raise NoOpeningError()
        campaign = event.mutate(campaign)
    return campaign
