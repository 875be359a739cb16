"""Fixtures the unit tests share: an application on the in-memory store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from domain.application import GroupBuying
from tests.unit.builders import OPENED_AT, small_definition


@pytest.fixture
def app() -> Iterator[GroupBuying]:
    """The application on eventsourcing's in-memory store, with the small campaign open."""
    application = GroupBuying(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    application.open_campaign(small_definition(), OPENED_AT)
    yield application
    application.close()
