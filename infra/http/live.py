"""Campaigns' live figures, pushed to Server-Sent Events clients when the projector commits.

The projector names each campaign a committed batch changed on a PostgreSQL notification
channel (`ReadModelTables.channel`); a notification is delivered at commit, and only then.
One connection of the server listens. A campaign someone watches is read again once per
notification, however many clients watch it, and a notification that comes while it is
being read makes one more read after: a client may miss a figure between two, never the
last one. After the listening connection is lost and made again, every watched campaign
is read again, since notifications sent meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

log = logging.getLogger(__name__)
KEEPALIVE = 15.0  # seconds of quiet after which a stream sends a comment, so proxies keep it
RECONNECT_PAUSE = 1.0  # seconds before listening again after the connection was lost

EVERY = ""  # in `LiveFeed.changes`: every campaign may have changed (no id is empty)
Frame = dict[str, Any]
Read = Callable[[str], Frame | None]  # a campaign's frame from the read models; None: none


@dataclass
class Watched:
    """A campaign some clients watch: its latest frame, and who is waiting for the next."""

    frame: Frame | None = None
    clients: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    reading: bool = False
    read_again: bool = False


class Answers:
    """Encoded answers of the read models, kept until the projector changes their campaign.

    Kept only while the feed listens (it is told of every change then): an answer read
    before a change, or before the listening connection was lost, and stored after it is
    refused (`put` compares the `ticket` taken before the read), so none outlives its
    figures.
    """

    def __init__(self) -> None:
        self.entries: dict[str, Any] = {}
        self.changes: dict[str, int] = {}
        self.epoch = 0  # connections lost so far

    def ticket(self, campaign_id: str) -> tuple[int, int]:
        return self.epoch, self.changes.get(campaign_id, 0)

    def get(self, campaign_id: str) -> Any:
        return self.entries.get(campaign_id)

    def put(self, campaign_id: str, answer: Any, ticket: tuple[int, int]) -> None:
        if self.ticket(campaign_id) == ticket:
            self.entries[campaign_id] = answer

    def changed(self, campaign_id: str) -> None:
        self.changes[campaign_id] = self.changes.get(campaign_id, 0) + 1
        self.entries.pop(campaign_id, None)

    def forget(self) -> None:
        """Drop every answer, and refuse those being read: changes may have gone unheard."""
        self.epoch += 1
        self.entries.clear()


class LiveFeed:
    def __init__(self, conninfo: str, channel: str, read: Read) -> None:
        self.conninfo, self.channel, self.read = conninfo, channel, read
        self.answers = Answers()
        self.watched: dict[str, Watched] = {}
        self.followers: set[asyncio.Queue[str]] = set()  # of every campaign (the dashboard)
        self.listening = asyncio.Event()
        self.stopped = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self) -> None:
        """Follow the channel until cancelled, connecting again whenever the link is lost."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(SQL("LISTEN {}").format(Identifier(self.channel)))
                    self.answers.forget()
                    self.listening.set()
                    for campaign_id in list(self.watched):  # what changed while away
                        self.changed(campaign_id)
                    for queue in self.followers:
                        queue.put_nowait(EVERY)
                    async for note in conn.notifies():
                        self.changed(note.payload)
            except psycopg.Error as error:
                self.listening.clear()
                self.answers.forget()
                log.warning("live updates lost their database connection (%s); again", error)
                await asyncio.sleep(RECONNECT_PAUSE)

    def changed(self, campaign_id: str) -> None:
        """The projector committed a change of `campaign_id`: read it for its watchers."""
        self.answers.changed(campaign_id)
        for queue in self.followers:
            queue.put_nowait(campaign_id)
        watched = self.watched.get(campaign_id)
        if watched is None:
            return
        if watched.reading:
            watched.read_again = True
            return
        watched.reading = True
        task = asyncio.create_task(self._refresh(campaign_id, watched))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, campaign_id: str, watched: Watched) -> None:
        try:
            while True:
                watched.read_again = False
                await self._load(campaign_id, watched)
                if not watched.read_again:
                    return
        except psycopg.Error as error:
            log.warning("cannot read campaign %r for its live stream: %s", campaign_id, error)
        finally:
            watched.reading = False

    async def _load(self, campaign_id: str, watched: Watched) -> None:
        frame = await asyncio.to_thread(self.read, campaign_id)
        if frame is not None and frame != watched.frame:
            async with watched.changed:
                watched.frame = frame
                watched.changed.notify_all()

    async def frames(self, campaign_id: str, seen: int | None) -> AsyncIterator[Frame | None]:
        """The campaign's frames from now on: the current one first unless its version is
        `seen` (a client's Last-Event-ID), then each change; None after KEEPALIVE seconds
        with none. Ends when the feed stops."""
        watched = self.watched.setdefault(campaign_id, Watched())
        watched.clients += 1
        try:
            if watched.frame is None:
                await self._load(campaign_id, watched)
            while not self.stopped:
                frame = watched.frame
                if frame is not None and frame["version"] != seen:
                    seen = frame["version"]
                    yield frame
                if not await self._next(watched, seen):
                    yield None
        finally:
            watched.clients -= 1
            if watched.clients == 0 and self.watched.get(campaign_id) is watched:
                del self.watched[campaign_id]

    async def _next(self, watched: Watched, seen: int | None) -> bool:
        """Wait for a frame other than version `seen`: False after KEEPALIVE seconds."""

        def moved() -> bool:
            frame = watched.frame
            return self.stopped or (frame is not None and frame["version"] != seen)

        async with watched.changed:
            try:
                await asyncio.wait_for(watched.changed.wait_for(moved), KEEPALIVE)
            except TimeoutError:
                return False
        return True

    def follow(self) -> asyncio.Queue[str]:
        """Start following every campaign's changes (`changes`); `unfollow` ends it."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.followers.add(queue)
        return queue

    def unfollow(self, queue: asyncio.Queue[str]) -> None:
        self.followers.discard(queue)

    async def changes(self, queue: asyncio.Queue[str]) -> AsyncIterator[set[str] | None]:
        """The ids of the campaigns changed since the last yield, as they change (`EVERY`
        among them after the listening connection was made again: any may have); None after
        KEEPALIVE seconds with none. Ends when the feed stops."""
        while not self.stopped:
            try:
                first = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                yield None
                continue
            changed = {first}
            while not queue.empty():
                changed.add(queue.get_nowait())
            if not self.stopped:
                yield changed

    async def answer(self, campaign_id: str, read: Callable[[], Any]) -> Any:
        """`read()`'s answer for `campaign_id`, kept until the campaign changes while the
        feed listens; read on a worker thread when not kept."""
        if self.listening.is_set() and (kept := self.answers.get(campaign_id)) is not None:
            return kept
        ticket = self.answers.ticket(campaign_id)
        fresh = await asyncio.to_thread(read)
        if self.listening.is_set():
            self.answers.put(campaign_id, fresh, ticket)
        return fresh

    async def stop(self) -> None:
        """End every stream (a server shutting down waits for its open responses)."""
        self.stopped = True
        for queue in self.followers:
            queue.put_nowait(EVERY)
        for watched in list(self.watched.values()):
            async with watched.changed:
                watched.changed.notify_all()
