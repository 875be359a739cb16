"""The event store's rows read as campaign events, fast, for a rebuild."""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from domain.application import GroupBuying
from domain.campaign import Campaign
from infra.adapters.app import recorder_of
from projections.wire import MESSAGE_TYPES, CampaignEvent, decode, encode

PAGE = 10_000  # events fetched from PostgreSQL at a time


class StoredEvents:
    """The event store's rows as campaign events, oldest first.

    The state is read straight from eventsourcing's JSON, without building domain objects;
    a row this cannot read so (an old `class_version` to upcast, a type it does not know)
    goes through the library's mapper instead.
    """

    def __init__(self, app: GroupBuying, share: tuple[int, int] = (0, 1)) -> None:
        """`share` (k, n): only the campaigns whose id falls in the k-th of n shares."""
        self.app = app
        self.share = share
        recorder = recorder_of(app)
        self.table = Identifier(recorder.datastore.schema, recorder.events_table_name)
        self.types = {get_topic(cls): name for cls, name in MESSAGE_TYPES.items()}
        self.versions = {get_topic(cls): getattr(cls, "class_version", 1) for cls in MESSAGE_TYPES}
        self.slugs: dict[str, str] = {}  # originator id (as text) -> campaign_id

    def last_notification_id(self) -> int:
        with self._connection() as conn:
            cursor = conn.cursor(row_factory=tuple_row)
            last = cursor.execute(
                SQL("SELECT max(notification_id) FROM {}").format(self.table)
            ).fetchone()
        return int(last[0]) if last and last[0] is not None else 0

    def know(self, campaign_ids: Iterator[str] | list[str]) -> None:
        """Campaigns opened before the events to be read (their ids derive from their slugs)."""
        self.slugs.update({str(Campaign.create_id(slug)): slug for slug in campaign_ids})

    def read(
        self, after: int, upto: int | None = None, types: Sequence[str] | None = None
    ) -> Iterator[CampaignEvent]:
        """Each event after notification id `after`, up to `upto`, of `types` if given."""
        topics = None if types is None else [t for t, n in self.types.items() if n in types]
        query = SQL(
            "SELECT originator_id::text, originator_version, topic, state FROM {} "
            "WHERE notification_id > %s AND notification_id <= %s "
            "AND (%s::text[] IS NULL OR topic = ANY(%s)) "
            "AND mod(get_byte(uuid_send(originator_id), 15), %s) = %s ORDER BY notification_id"
        ).format(self.table)
        k, n = self.share
        upto = upto if upto is not None else 2**63 - 1
        for page in self._pages(query, (after, upto, topics, topics, n, k)):
            for originator_id, version, topic, state in page:
                yield self.event(originator_id, version, topic, state)

    def _pages(self, query: Composed, params: tuple[Any, ...]) -> Iterator[list[tuple[Any, ...]]]:
        """Pages of rows; the next is fetched on a thread of its own while this one is used."""
        pages: queue.Queue[list[tuple[Any, ...]] | BaseException | None] = queue.Queue(2)

        def fetch() -> None:
            try:
                with (
                    self._connection() as conn,
                    conn.transaction(),
                    conn.cursor(
                        name=f"replay_{secrets.token_hex(4)}", row_factory=tuple_row
                    ) as cur,
                ):
                    cur.execute(query, params)
                    while rows := cur.fetchmany(PAGE):
                        pages.put(rows)
                pages.put(None)
            except BaseException as error:  # handed to the reading thread, raised there
                pages.put(error)

        threading.Thread(target=fetch, name="replay-reader", daemon=True).start()
        while (page := pages.get()) is not None:
            if isinstance(page, BaseException):
                raise page
            yield page

    def _connection(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        return recorder_of(self.app).datastore.get_connection()

    def event(self, originator_id: str, version: int, topic: str, state: bytes) -> CampaignEvent:
        fields = _STATE.decode(state.decode())
        if fields.get("class_version", 1) != self.versions.get(topic) or _NEEDS_MAPPER in fields:
            return self._through_mapper(originator_id, version, topic, state)
        if topic not in self.types:
            raise ValueError(f"unknown event topic {topic!r}")
        occurred_at = datetime.fromisoformat(fields.pop("timestamp"))
        fields.pop("originator_topic", None)
        if "campaign_id" in fields:
            self.slugs[originator_id] = fields.pop("campaign_id")
        return CampaignEvent(
            self.types[topic], self.slugs[originator_id], version, occurred_at, fields
        )

    def _through_mapper(
        self, originator_id: str, version: int, topic: str, state: bytes
    ) -> CampaignEvent:
        stored = StoredEvent(UUID(originator_id), version, topic, state)
        event = self.app.mapper.to_domain_event(stored)
        if isinstance(event, Campaign.Opened):
            self.slugs[originator_id] = event.campaign_id
        return decode(encode(event, self.slugs[originator_id]))


_NEEDS_MAPPER = "_needs_mapper_"


def _plain(value: dict[str, Any]) -> dict[str, Any] | str:
    """eventsourcing's wrapped values as the campaign-events topic writes them."""
    kind = value.get("_type_")
    if kind is None:
        return value
    data = value["_data_"]
    if kind == "decimal_str":
        return str(data)
    if kind == "datetime_iso" and isinstance(data, str) and data.endswith("+00:00"):
        return data.removesuffix("+00:00") + "Z"
    return {_NEEDS_MAPPER: True}  # seen at the top level, since json.loads works inside out


# One decoder for every row (json.loads would build one a call): 5 µs for a commitment.
_STATE = json.JSONDecoder(object_hook=_plain)
