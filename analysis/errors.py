"""Errors an analyst can meet, each saying what to do instead."""

from __future__ import annotations

from datetime import datetime

from domain.errors import CampaignError
from domain.timefmt import format_instant


class AnalysisError(CampaignError):
    """Base of the errors the analysis reports raise."""


class NotYetOpenedError(AnalysisError):
    """The instant asked for comes before the campaign existed."""

    def __init__(self, campaign_id: str, at: datetime, opened_at: datetime) -> None:
        super().__init__(
            f"campaign {campaign_id!r} was opened at {format_instant(opened_at)}, after "
            f"{format_instant(at)}; ask for an instant from its opening on"
        )


class NoOpeningError(AnalysisError):
    """A history that does not start with the campaign's opening cannot be replayed."""

    def __init__(self) -> None:
        super().__init__("the campaign's events do not start with its opening")
