"""Domain errors: one base, names ending in Error, messages that say what to do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CampaignError(Exception):
    """Base of every error the campaign domain raises."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a campaign definition: which field, and what."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class DefinitionError(CampaignError):
    """A campaign definition is invalid; `problems` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid campaign definition, fix these fields:\n{lines}")


class UnknownCampaignError(CampaignError):
    """No campaign was opened with this id."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id = campaign_id
        super().__init__(f"no campaign {campaign_id!r}; check the id or open it first")


class CampaignExistsError(CampaignError):
    """A campaign with this id was already opened with a different definition."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id = campaign_id
        super().__init__(
            f"campaign {campaign_id!r} is already open with another definition; "
            "choose a new campaign_id"
        )


class CampaignClosedError(CampaignError):
    """An operator command needs an open campaign, and this one is not."""

    def __init__(self, campaign_id: str, why: str) -> None:
        self.campaign_id = campaign_id
        super().__init__(f"campaign {campaign_id!r} is no longer open: {why}")


class DeadlineNotLaterError(CampaignError):
    """A deadline can only move later."""

    def __init__(self, campaign_id: str, current: str, requested: str) -> None:
        self.campaign_id = campaign_id
        super().__init__(
            f"campaign {campaign_id!r} ends at {current}; a new deadline must be later "
            f"than that, not {requested}"
        )


class SnapshotFormatError(CampaignError):
    """A stored snapshot has a shape this code no longer reads."""

    def __init__(self, campaign_id: str, version: int, found: object, expected: int) -> None:
        self.campaign_id = campaign_id
        super().__init__(
            f"the snapshot of campaign {campaign_id!r} at version {version} has format "
            f"{found!r}, and this groupbuy reads only format {expected}; delete the campaign's "
            "snapshots (they are only a cache) and it is rebuilt from its events"
        )


class ClockError(CampaignError):
    """A command was given a time without a time zone, so 'when' is ambiguous."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} must be a timezone-aware datetime (UTC)")
