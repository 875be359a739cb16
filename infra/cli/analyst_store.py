"""The event store as analyst commands read it: one campaign's events, or none found."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError

from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.timefmt import parse_instant
from infra.app import open_app
from infra.commands import NOT_FOUND, UNREACHABLE, CommandError, require_postgres
from infra.settings import Settings


@contextmanager
def event_store(settings: Settings) -> Iterator[GroupBuying]:
    """The event store; an unreachable database is named (exit 3), not a traceback."""
    require_postgres(settings)  # fails fast, with the address and no password
    try:
        app = open_app(settings)
    except (OperationalError, InterfaceError) as error:
        raise CommandError(f"cannot open the event store: {error}", exit_code=UNREACHABLE) from None
    try:
        yield app
    finally:
        app.close()


def campaign_events(app: GroupBuying, campaign_id: str) -> list[Any]:
    """Every stored event of one campaign, in order; an unknown id is a clear error."""
    events = list(app.events.get(Campaign.create_id(campaign_id)))
    if not events:
        raise CommandError(
            f"no campaign {campaign_id!r} in the event store; "
            "check the id with `groupbuy campaign list`",
            NOT_FOUND,
        )
    return events


def instant_argument(option: str, value: str) -> datetime:
    try:
        return parse_instant(value)
    except ValueError as error:
        raise CommandError(f"{option} {error}") from None
